"""What people sit in front of: notebook widgets (``widgets``) over the Workbench façade, and the Panel
dashboard (``dashboard``: one module per component, mounted at ``/dashboard`` by ``routes``)."""

from __future__ import annotations

from typing import Any

from workbench.ui.widgets import Controls, LiveView

__all__ = ["Controls", "Dashboard", "LiveView"]


def __getattr__(name: str) -> Any:
    # NOTE: the Panel dashboard (``dashboard``, ``routes``) is imported on first use: Panel takes a second to load.
    if name == "Dashboard":
        from workbench.ui.dashboard import Dashboard

        return Dashboard
    raise AttributeError(f"module 'workbench.ui' has no attribute {name!r}")
