"""The serving front: Open Inference Protocol (KServe V2) REST, the control API and metrics, on one port."""

from __future__ import annotations

from workbench.serving.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
