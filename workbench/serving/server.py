"""Running the application under uvicorn: one process, one port, one line when ready.

uvicorn stops on SIGINT/SIGTERM by closing the listening socket, finishing the
requests in flight, then running the application's shutdown (the engine
answers what is queued and stops its cluster).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from workbench.engine import Engine
from workbench.pipeline.graph import Pipeline
from workbench.serving.app import ServeConfig, create_app, is_loopback

__all__ = ["engine_factory", "serve"]


def engine_factory(scheduler: str | None, workers: int, threads_per_worker: int = 1,
                   inprocess: bool = False) -> Callable[[], Any]:
    """How the server gets its engine: in-process, a LocalCluster of its own, or an existing cluster."""

    async def start() -> Engine:
        if inprocess:
            return Engine.inprocess()
        if scheduler:
            return await Engine.connect(scheduler)
        return await Engine.local(workers, threads_per_worker)

    return start


def serve(targets: Sequence[Pipeline | str | Path], *, host: str = "127.0.0.1", port: int = 8000,
          scheduler: str | None = None, workers: int = 2, inprocess: bool = False, token: str | None = None,
          config: ServeConfig | None = None, echo: Callable[[str], None] = print,
          on_ready: Callable[[uvicorn.Server], Any] | None = None) -> None:
    """Serve ``targets`` until SIGINT/SIGTERM; prints one line with the URLs when ready.

    Beyond loopback a token is required for the control API (one is generated and
    printed when none is given, or taken from ``WORKBENCH_TOKEN``).
    """
    config = config or ServeConfig()
    config.targets = list(targets)
    token = token or os.environ.get("WORKBENCH_TOKEN") or config.token
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
        echo(f"bound beyond loopback: the control API needs 'Authorization: Bearer {token}'")
    config.token = token
    app = create_app(engine_factory(scheduler, workers, inprocess=inprocess), config)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=30, lifespan="on"))

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            engine: Engine = app.state.engine
            base = f"http://{host}:{port}"
            dask = engine.describe().get("dashboard_link")
            echo(f"Inference Workbench serving {', '.join(engine.names()) or 'no pipeline yet'} at {base} "
                 f"(V2: {base}/v2, control: {base}/api, docs: {base}/docs, metrics: {base}/metrics"
                 + (f", Dask dashboard: {dask}" if dask else "") + ")")
            if on_ready is not None:
                on_ready(server)
        await task

    asyncio.run(run())
