"""Helpers of the browser tests: a real server in a thread, a browser tab that records its errors, waiting.

Screenshots are kept under ``test-artifacts/browser/`` (ignored by git).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI

from workbench.engine import Engine
from workbench.serving.app import ServeConfig, create_app

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


@dataclass
class Live:
    """A server running in a thread of its own; :meth:`call` runs a function on its loop, where the engine lives."""

    app: FastAPI
    server: uvicorn.Server
    url: str
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def engine(self) -> Engine:
        engine: Engine = self.app.state.engine
        return engine

    def call(self, fn: Callable[[], T], timeout_s: float = 60.0) -> T:
        assert self.loop is not None

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout_s)


@contextmanager
def live_server(start: Callable[[], Any], config: ServeConfig) -> Iterator[Live]:
    """``workbench serve``'s app with ``config`` on a free loopback port until the block ends."""
    app = create_app(start, config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    live = Live(app, server, f"http://127.0.0.1:{sock.getsockname()[1]}")

    async def main() -> None:
        live.loop = asyncio.get_running_loop()
        await server.serve(sockets=[sock])

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="browser-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 180
        while not server.started:
            assert thread.is_alive(), "the server stopped while starting (see its log)"
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.05)
        yield live
    finally:
        server.should_exit = True
        thread.join(120)
        sock.close()


@dataclass
class Page:
    """A browser tab and what went wrong in it: page errors (uncaught exceptions) and console errors."""

    page: Any
    errors: list[str]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def points(self, source: str) -> tuple[int, float]:
        """How many points a chart's data source holds, and the time of the last one."""
        return tuple(self.page.evaluate(
            """(name) => {
                for (const doc of Bokeh.documents) {
                    const source = doc.get_model_by_name(name);
                    if (source) { const t = source.data.time; return [t.length, t.length ? t[t.length - 1] : 0]; }
                }
                return [0, 0];
            }""", source))

    def last(self, source: str, column: str) -> float | None:
        return self.page.evaluate(
            """([name, column]) => {
                for (const doc of Bokeh.documents) {
                    const source = doc.get_model_by_name(name);
                    if (source) { const c = source.data[column]; return c.length ? c[c.length - 1] : null; }
                }
                return null;
            }""", [source, column])


@contextmanager
def open_page(browser: Any, url: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda message: errors.append(f"console {message.type}: {message.text}")
            if message.type == "error" else None)
    try:
        page.goto(url)
        page.wait_for_function("() => window.Bokeh !== undefined && Bokeh.documents.length > 0", timeout=30_000)
        yield Page(page, errors)
    finally:
        context.close()


def eventually(check: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(interval_s)
