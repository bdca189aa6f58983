"""What every view of one engine shares: the link onto its loop, one statistics feed, one traffic lab."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from workbench.config import WorkbenchSettings
from workbench.traffic.lab import TrafficLab
from workbench.ui.feed import StatsFeed
from workbench.ui.link import EngineLink

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from workbench.engine import Engine

__all__ = ["Hub"]


class Hub:
    """The shared side of the views of one engine (the per-view side is :class:`~workbench.ui.state.DashboardState`).

    Parameters
    ----------
    engine
        The engine the views show and drive.
    loop
        The loop the engine lives on.
    portal
        The Workbench's portal onto that loop, when the views run elsewhere (a notebook).
    refresh_s
        Seconds between two refreshes of a view (default ``WORKBENCH_UI_REFRESH_S``, 1 s).
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, portal: BlockingPortal | None = None, *,
                 refresh_s: float | None = None) -> None:
        self.engine = engine
        self.refresh_s = WorkbenchSettings().ui_refresh_s if refresh_s is None else refresh_s
        self.link = EngineLink(engine, loop, portal)
        self.lab = TrafficLab(engine)
        self.feed = StatsFeed(self.link, self.lab, interval_s=self.refresh_s)

    @classmethod
    def of_app(cls, app: Any) -> Hub:
        """The hub of a serving app, made on first use; its engine lives on the loop that started the app.

        :func:`~workbench.ui.routes.mount_dashboard` notes that loop at startup; an app without the
        dashboard is used from its own loop (the caller's).
        """
        hub: Hub | None = getattr(app.state, "workbench_hub", None)
        if hub is None:
            loop = getattr(app.state, "engine_loop", None) or asyncio.get_running_loop()
            hub = app.state.workbench_hub = cls(app.state.engine, loop)
        return hub

    @classmethod
    def on_portal(cls, engine: Engine, portal: BlockingPortal, *, refresh_s: float | None = None) -> Hub:
        """The hub of an engine that runs on ``portal``'s loop (a :class:`~workbench.api.Workbench`)."""
        return cls(engine, portal.call(asyncio.get_running_loop), portal, refresh_s=refresh_s)
