"""The ASGI application: V2 REST, control API and metrics on one port, over one engine.

The engine runs on the server's own event loop (no thread hop between the
HTTP handler and the batcher). Errors become the V2 error body
``{"error": "..."}`` with the status the error carries; bodies over the limit
get 413 before they are read; a full queue gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workbench import __version__
from workbench.config import WorkbenchSettings
from workbench.engine import Engine, resolve_pipeline
from workbench.errors import WorkbenchError
from workbench.pipeline.graph import Pipeline
from workbench.serving import control, metrics, v2
from workbench.serving.access import AccessGuard, unclassified
from workbench.serving.errors import error_answer
from workbench.serving.fastpath import InferFastPath, WorkbenchAPI
from workbench.serving.responses import JSONResponse

__all__ = ["ServeConfig", "create_app", "is_loopback"]

EngineFactory = Callable[[], Awaitable[Engine]]


@dataclass
class ServeConfig:
    """How the server behaves.

    Parameters
    ----------
    token
        Required (``Authorization: Bearer <token>``) by every route that reads or changes the server's
        state when set (:mod:`workbench.serving.access`); ``workbench serve`` refuses to bind beyond
        loopback without one.
    protect_inference
        Require the token for the V2 inference and metadata routes and ``/metrics`` too.
    max_body_bytes
        Larger request bodies are refused with 413 before they are read.
    default_timeout_ms
        Deadline of requests that do not set one (``None``: no deadline).
    dashboard
        Serve the Panel dashboard at ``/dashboard`` (see :mod:`workbench.ui.routes`).
    fast_infer
        Answer V2 infer requests before FastAPI's routing (:mod:`workbench.serving.fastpath`);
        ``False`` sends them through FastAPI's route, which answers alike, more slowly.
    """

    token: str | None = None
    protect_inference: bool = False
    max_body_bytes: int = 64 * 2**20
    default_timeout_ms: float | None = None
    targets: Sequence[Pipeline | str | Path] = field(default_factory=tuple)
    batching: Mapping[str, Any] | None = None
    dashboard: bool = True
    fast_infer: bool = True


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loadable_pipelines() -> dict[str, Pipeline | str | Path]:
    """Pipelines that can be deployed by name: the demos and the files in the pipelines folder."""
    from workbench.demo import DEMOS

    found: dict[str, Pipeline | str | Path] = {name: name for name in DEMOS}
    folder = WorkbenchSettings().pipelines_dir
    if folder.is_dir():
        found.update({path.stem: path for path in sorted(folder.glob("*.yaml"))})
    return found


def create_app(engine_factory: EngineFactory, config: ServeConfig | None = None) -> FastAPI:
    """The application; the engine is started (and the targets deployed) when the server starts."""
    config = config or ServeConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = await engine_factory()
        app.state.engine = engine
        app.state.http_metrics = metrics.HttpInstruments(engine.metrics.registry)
        try:
            for target in config.targets:
                pipeline = resolve_pipeline(target, load=False)
                if pipeline.name in engine:
                    continue  # NOTE: already deployed on the cluster by another front, and attached
                await engine.deploy(target, batching=config.batching)
            yield
        finally:
            # NOTE: the traffic lab (dashboard, `workbench demo`) sends through the engine, not over HTTP:
            # it stops, and its answers still due arrive, before the engine closes under it.
            hub = getattr(app.state, "workbench_hub", None)
            if hub is not None:
                await hub.lab.close()
            # NOTE: uvicorn has finished the requests in flight by now; the batchers answer what is queued.
            await engine.close()

    app = WorkbenchAPI(title="Inference Workbench", version=__version__, lifespan=lifespan,
                  default_response_class=JSONResponse,
                  description="Open Inference Protocol (KServe V2) inference and the workbench's control API.")
    app.state.config = config
    app.state.loadable = loadable_pipelines
    app.include_router(v2.router)
    app.include_router(control.router)
    app.include_router(metrics.router)
    if config.dashboard:
        # NOTE: imported here: Panel takes a second to load, and a server without the dashboard never needs it.
        from workbench.ui.routes import mount_dashboard

        mount_dashboard(app)
    missing = unclassified(app.routes)
    if missing:
        raise RuntimeError(f"routes without an access class (add them to workbench.serving.access.RULES): {missing}")
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.token:
        # NOTE: outside BodyLimit: a refused request is not read at all.
        app.add_middleware(AccessGuard, token=config.token, protect_inference=config.protect_inference)
    # NOTE: added after BodyLimit, so outside it: it counts the 413s of BodyLimit too.
    app.add_middleware(metrics.HttpMetrics)
    if config.fast_infer:
        app.fast_path = InferFastPath(app, config)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def workbench_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, (WorkbenchError, ValueError))
        status, headers, body = error_answer(exc)
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=400)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # NOTE: Starlette still logs the traceback; the caller gets the V2 error body, not a bare text page.
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    app.add_exception_handler(Exception, internal_error)
    app.add_exception_handler(WorkbenchError, workbench_error)
    app.add_exception_handler(ValueError, workbench_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413: by ``Content-Length`` at once, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        seen = 0
        limit = self.max_bytes
        too_large = started = False

        async def counted() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def answer(message: Message) -> None:
            nonlocal started
            # NOTE: FastAPI turns an error raised while it reads a body parameter into its own 400
            # ("There was an error parsing the body"): once the limit is passed, that answer is dropped for the 413.
            if too_large and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with suppress(_TooLarge):
            await self.app(scope, counted, answer)
        if too_large and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse({"error": f"request body larger than {self.max_bytes} bytes"}, status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass
