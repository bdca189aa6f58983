"""A real server on loopback for the tests: the app under uvicorn in a background thread, and a load generator.

The server thread runs its own event loop (the engine lives there); :meth:`LiveServer.call`
runs a coroutine on it, e.g. to reach the engine's Dask client.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI

from workbench.engine import Engine
from workbench.serving.app import ServeConfig, create_app

T = TypeVar("T")


@dataclass
class LiveServer:
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread
    url: str
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def engine(self) -> Engine:
        engine: Engine = self.app.state.engine
        return engine

    def call(self, make: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
        """Run ``make()`` on the server's event loop and wait for its result."""
        assert self.loop is not None

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout_s)


@contextmanager
def live_server(engine_factory: Callable[[], Awaitable[Engine]], config: ServeConfig | None = None, *,
                startup_timeout_s: float = 180.0) -> Iterator[LiveServer]:
    """Serve ``create_app(engine_factory, config)`` on a free loopback port until the block ends."""
    app = create_app(engine_factory, config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=30, backlog=4096))
    live = LiveServer(app, server, threading.Thread(), f"http://127.0.0.1:{port}")

    async def main() -> None:
        live.loop = asyncio.get_running_loop()
        await server.serve(sockets=[sock])

    live.thread = threading.Thread(target=asyncio.run, args=(main(),), name="live-server", daemon=True)
    live.thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not live.thread.is_alive():
                raise RuntimeError("the server stopped during startup (see its log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {startup_timeout_s:g} s")
            time.sleep(0.05)
        yield live
    finally:
        server.should_exit = True
        live.thread.join(120)
        sock.close()


@dataclass
class Answer:
    """One HTTP answer (or why there was none), as the load generator saw it."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    #: From the request's last byte sent to the answer's headers read: the time the server took, as
    #: the client saw it (without the time the request waited in the client to be sent).
    answer_s: float = float("nan")

    @property
    def version(self) -> str | None:
        return self.body.get("model_version")

    @property
    def timings_ms(self) -> dict[str, float]:
        return dict((self.body.get("parameters") or {}).get("timings_ms") or {})

    def output(self, name: str) -> list[Any]:
        return next(o["data"] for o in self.body["outputs"] if o["name"] == name)


def text_request(sentences: list[str], **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(sentences)],
                                        "data": sentences}]}
    if parameters:
        body["parameters"] = parameters
    return body


def tabular_request(rows: np.ndarray, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape),
                                        "data": rows.ravel().tolist()}]}
    if parameters:
        body["parameters"] = parameters
    return body


def client(connections: int = 64, timeout_s: float = 90.0) -> httpx.AsyncClient:
    # NOTE: idle connections are dropped well before the server's keep-alive timeout (uvicorn: 5 s, as is httpx's
    # default): otherwise a request may go out on a connection the server is closing at that moment.
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=1.0)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s, connect=timeout_s, pool=timeout_s))


async def post(http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
               on_sent: Callable[[], None] | None = None) -> Answer:
    """POST and read the answer; a transport failure or a timeout is an answer with status 0 (never raised).

    ``on_sent`` is called once the whole request has been written to the connection.
    """
    began = time.perf_counter()
    marks: dict[str, float] = {}

    async def trace(event: str, info: dict[str, Any]) -> None:
        marks[event] = time.perf_counter()
        if event == "http11.send_request_body.complete" and on_sent is not None:
            on_sent()

    try:
        response = await http.post(url, json=body, headers=headers, extensions={"trace": trace})
    except httpx.HTTPError as exc:
        return Answer(0, seconds=time.perf_counter() - began, error=f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - began
    try:
        parsed = response.json()
    except ValueError:
        parsed = {"error": response.text}
    sent = marks.get("http11.send_request_body.complete", float("nan"))
    answered = marks.get("http11.receive_response_headers.complete", float("nan"))
    return Answer(response.status_code, parsed if isinstance(parsed, dict) else {"body": parsed},
                  dict(response.headers), seconds, answer_s=answered - sent)
