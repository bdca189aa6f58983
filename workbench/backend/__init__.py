"""Where batches run: in this process, or (next) on Dask workers."""

from __future__ import annotations

from workbench.backend.inprocess import InProcessRunner

__all__ = ["InProcessRunner"]
