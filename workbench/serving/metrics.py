"""``GET /metrics`` and the HTTP metrics: the engine's Prometheus registry over the REST front.

The engine counts what happens to requests (:mod:`workbench.monitor.metrics`),
whichever surface sent them. This module adds what only the HTTP front sees,
into the same registry, through a light ASGI middleware (no body is read, no
JSON is parsed)::

    workbench_http_requests_total{method,route,model,code}
    workbench_http_request_duration_seconds{method,route}

``route`` is the route's template (``/v2/models/{name}/infer``), or ``""``
when no route matched; ``model`` is the ``{name}`` of the path when a pipeline
of that name is deployed, and ``""`` otherwise, so that requests for made-up
names cannot add series without bound.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workbench.engine import Engine
from workbench.monitor.metrics import CONTENT_TYPE, DURATION_BUCKETS_S

__all__ = ["HttpInstruments", "HttpMetrics", "router"]

router = APIRouter(tags=["Metrics"])

#: Methods counted by name; any other is counted as ``"other"``.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@router.get("/metrics", summary="Prometheus metrics (text format 0.0.4)", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {}}}})
async def metrics(request: Request) -> Response:
    engine: Engine = request.app.state.engine
    # NOTE: written on the event loop that owns the engine, not in a thread: the collectors read the
    # engine's state, which belongs to this loop. It holds the loop a few ms once per scrape interval
    # (3.5 ms for two pipelines of ten timings each).
    return Response(engine.metrics.exposition(), media_type=CONTENT_TYPE)


class HttpInstruments:
    """The HTTP metrics, in ``registry`` (the engine's).

    Parameters
    ----------
    registry
        Where the instruments are registered: ``engine.metrics.registry``.

    Examples
    --------
    >>> app.state.http_metrics = HttpInstruments(engine.metrics.registry)   # doctest: +SKIP
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("workbench_http_requests", "HTTP requests answered, by route template, model and "
                                "status code.", ["method", "route", "model", "code"], registry=registry)
        self.duration = Histogram("workbench_http_request_duration_seconds", "HTTP requests from the first byte "
                                  "received to the last one sent.", ["method", "route"], buckets=DURATION_BUCKETS_S,
                                  registry=registry)
        # NOTE: the labelled series, kept: looking one up through labels() costs about as much as counting.
        # Bounded by routes x methods x deployed models x status codes.
        self._series: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count one request that ``scope`` describes (after routing), answered with ``status``."""
        method = scope["method"] if scope["method"] in _METHODS else "other"
        route = getattr(scope.get("route"), "path", "")
        name = scope.get("path_params", {}).get("name")
        model = ""
        if name is not None:
            engine: Engine | None = getattr(scope["app"].state, "engine", None)
            model = name if engine is not None and name in engine else ""
        self.count(method, route, model, status, seconds)

    def count(self, method: str, route: str, model: str, status: int, seconds: float) -> None:
        """Count one request by its labels (what :meth:`observe` reads from the scope)."""
        key = (method, route, model, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (self.requests.labels(method, route, model, str(status)),
                                          self.duration.labels(method, route))
        series[0].inc()
        series[1].observe(seconds)


class HttpMetrics:
    """ASGI middleware counting every HTTP request into ``app.state.http_metrics`` (an :class:`HttpInstruments`).

    Requests before the application has started (no instruments yet) pass uncounted.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instruments: HttpInstruments | None = (getattr(scope["app"].state, "http_metrics", None)
                                               if scope["type"] == "http" else None)
        if instruments is None:
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        # NOTE: 500 unless a response starts: an exception that escapes becomes one further out.
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # NOTE: read after the call: the router has put the matched route and path parameters in the scope.
            instruments.observe(scope, status, time.perf_counter() - began)
