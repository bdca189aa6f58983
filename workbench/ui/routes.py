"""The dashboard's route table, mounted into the serving app (one process, one port).

``/dashboard`` is the whole dashboard; ``/dashboard/<name>`` serves one
component alone (``latency``, ``throughput``, ``queue``, ``batches``,
``stages``, ``errors``, ``workers``, ``activity``, ``controls``, ``traffic``,
``summary``, ``business``, ``drift``, ``quality``). ``?pipeline=<name>`` picks the pipeline shown first.

Panel's sessions run on the server's own event loop, where the engine lives,
so the views call the engine directly (see :mod:`workbench.ui.link`).

Token. When the server has a token, the dashboard needs it too: open
``/dashboard?token=<token>`` once; the server answers with a redirect to the
same page without the token in the address, and an HttpOnly cookie (valid for
the browser session) that stands for it from then on, websocket included.
``Authorization: Bearer <token>`` works as well.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from hashlib import sha256
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from workbench.ui.component import Component
from workbench.ui.dashboard import COMPONENTS, Dashboard
from workbench.ui.hub import Hub

__all__ = ["COOKIE", "DashboardGuard", "applications", "mount_dashboard"]

PREFIX = "/dashboard"
COOKIE = "workbench_dashboard"


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


def mount_dashboard(app: FastAPI, token: str | None = None) -> None:
    """Serve the dashboard from ``app`` (see the module docstring); with ``token``, only to who has it."""
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
    if token is not None:
        app.add_middleware(DashboardGuard, token=token)


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


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest of the token (the token itself never sits in the browser)."""
    return hmac.new(token.encode(), b"workbench-dashboard", sha256).hexdigest()


class DashboardGuard:
    """Let requests to ``/dashboard`` through only with the server's token (header, cookie, or ``?token=`` once)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.cookie = cookie_value(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = next((value for key, value in query if key == "token"), None)
        if scope["type"] == "http" and given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            # NOTE: a relative redirect and no cookie Path, so that both still hold behind a proxy's prefix
            # (jupyter-server-proxy serves this page at /workbench/dashboard, and forwards /dashboard here).
            location = path.rsplit("/", 1)[1] + (f"?{rest}" if rest else "")
            cookie = f"{COOKIE}={self.cookie}; HttpOnly; SameSite=Strict"
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode()),
                                    (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # NOTE: closing before accepting refuses the handshake (HTTP 403).
            await send({"type": "websocket.close", "code": 1008})
            return
        response = JSONResponse({"error": f"the dashboard needs the server's token: open {PREFIX}?token=<token> "
                                            "once (or send 'Authorization: Bearer <token>')"}, status_code=401)
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), self.token.encode()):
            return True
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), self.cookie.encode()):
                return True
        return False
