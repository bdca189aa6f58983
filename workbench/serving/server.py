"""Running the application under uvicorn: one process, one port, one line when ready.

uvicorn stops on SIGINT/SIGTERM by closing the listening socket, finishing the
requests in flight, then running the application's shutdown (the engine
answers what is queued and stops its cluster). A stop asked for by SIGTERM then
ends the process with status 0.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from workbench.engine import Engine
from workbench.pipeline.graph import Pipeline
from workbench.serving.app import ServeConfig, create_app, is_loopback

__all__ = ["engine_factory", "serve", "uvicorn_config"]


def engine_factory(scheduler: str | None, workers: int, threads_per_worker: int = 1,
                   inprocess: bool = False, security: Any = None) -> Callable[[], Any]:
    """How the server gets its engine: in-process, a LocalCluster of its own, or an existing cluster.

    ``security`` (a ``distributed.security.Security``) is passed to the Dask client of an
    existing cluster that uses TLS; without it, Dask's own configuration applies
    (``distributed.comm.tls.*``, e.g. from ``DASK_DISTRIBUTED__COMM__TLS__...`` variables).
    """

    async def start() -> Engine:
        if inprocess:
            return Engine.inprocess()
        if scheduler:
            return await Engine.connect(scheduler, **({"security": security} if security is not None else {}))
        return await Engine.local(workers, threads_per_worker)

    return start


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """The uvicorn settings of ``workbench serve`` (``benchmarks/bench_http.py`` runs its baseline with them too).

    ``loop`` and ``http`` stay on ``"auto"``: uvloop and httptools (``uvicorn[standard]``) when installed.
    """
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=30, lifespan="on")


def serve(targets: Sequence[Pipeline | str | Path], *, host: str = "127.0.0.1", port: int = 8000,
          scheduler: str | None = None, workers: int = 2, inprocess: bool = False, token: str | None = None,
          security: Any = None, config: ServeConfig | None = None, echo: Callable[[str], None] = print,
          on_ready: Callable[[uvicorn.Server], Any] | None = None) -> None:
    """Serve ``targets`` until SIGINT/SIGTERM; prints one line with the URLs when ready.

    Beyond loopback, or with ``config.protect_inference``, a token is required (one
    is generated and printed when none is given, or taken from ``WORKBENCH_TOKEN``).
    """
    config = config or ServeConfig()
    config.targets = list(targets)
    token = token or os.environ.get("WORKBENCH_TOKEN") or config.token
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
        echo(f"bound beyond loopback: the control API needs 'Authorization: Bearer {token}'")
    elif token is None and config.protect_inference:
        token = secrets.token_urlsafe(24)
        echo(f"inference protected: every route but the health probes needs 'Authorization: Bearer {token}'")
    config.token = token
    app = create_app(engine_factory(scheduler, workers, inprocess=inprocess, security=security), config)
    server = uvicorn.Server(uvicorn_config(app, host, port))

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            engine: Engine = app.state.engine
            # NOTE: with port 0 the system picked one: report the port really bound.
            bound = [sock.getsockname()[1] for listener in server.servers for sock in listener.sockets]
            base = f"http://{host}:{bound[0] if bound else port}"
            dask = engine.describe().get("dashboard_link")
            echo(f"Inference Workbench serving {', '.join(engine.names()) or 'no pipeline yet'} at {base} "
                 f"(V2: {base}/v2, control: {base}/api, docs: {base}/docs, metrics: {base}/metrics"
                 + (f", dashboard: {base}/dashboard" if config.dashboard else "")
                 + (f", Dask dashboard: {dask}" if dask else "") + ")")
            if on_ready is not None:
                on_ready(server)
        await task

    # NOTE: the loop uvicorn would pick itself (uvloop when installed, as in ``Server.run``): a plain
    # ``asyncio.run`` here would leave the server, its batchers and the Dask client on the slower default loop.
    # NOTE: uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler that was
    # in place before it: with Python's default one the process would die of it (exit -15) after a clean
    # shutdown. A stop that was asked for is a clean exit (0), as process managers expect; a SIGTERM that
    # comes before uvicorn listens for signals stops the server as soon as it has started.
    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    # NOTE: only the main thread may set signal handlers (uvicorn listens for none elsewhere either).
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(run())
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
