"""The dashboard's route table, mounted into the serving app (one process, one port).

``/dashboard`` is the whole dashboard; ``/dashboard/<name>`` serves one
component alone (``latency``, ``throughput``, ``queue``, ``batches``,
``stages``, ``errors``, ``workers``, ``activity``, ``controls``, ``traffic``,
``summary``, ``business``, ``drift``, ``quality``). ``?pipeline=<name>`` picks the pipeline shown first.

Panel's sessions run on the server's own event loop, where the engine lives,
so the views call the engine directly (see :mod:`workbench.ui.link`).

When the server has a token, the dashboard needs it too (open
``/dashboard?token=<token>`` once); :mod:`workbench.serving.access` guards it
with every other route.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse

from workbench.serving.access import DASHBOARD as PREFIX
from workbench.ui.component import Component
from workbench.ui.dashboard import COMPONENTS, Dashboard
from workbench.ui.hub import Hub

__all__ = ["applications", "mount_dashboard"]


def applications(app: FastAPI) -> dict[str, Any]:
    """The route table: path -> function that builds the page of one browser session."""

    def page(component: type[Component]) -> Callable[[], Component]:
        def make() -> Component:
            import panel as pn

            wanted = pn.state.session_args.get("pipeline") or [b""]
            return component.page(Hub.of_app(app), wanted[0].decode() or None)

        return make

    routes = {PREFIX: page(Dashboard)}
    routes.update({f"{PREFIX}/{c.route}": page(c) for c in COMPONENTS if c.route})
    return routes


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard from ``app`` (see the module docstring)."""
    from panel.io.fastapi import add_applications
    from panel.io.resources import DIST_DIR

    routes = applications(app)
    titles = {path: "Inference Workbench" + ("" if path == PREFIX else f": {path.rsplit('/', 1)[1]}")
              for path in routes}
    add_applications(routes, app=app, title=titles)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(DIST_DIR / "images" / "favicon.ico")

    _close_lab_first(app)


def _close_lab_first(app: FastAPI) -> None:
    """Note the engine's loop once it runs; stop the traffic lab before the engine closes (the app's shutdown)."""
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with outer(app) as state:
            app.state.engine_loop = asyncio.get_running_loop()
            try:
                yield state
            finally:
                hub: Hub | None = getattr(app.state, "workbench_hub", None)
                if hub is not None:
                    await hub.lab.close()

    app.router.lifespan_context = lifespan

