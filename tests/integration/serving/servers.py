"""Real servers on loopback for the serving tests: :func:`serving` and the :class:`Served` it yields.

The servers run through :func:`loopback.live_server` (the app under uvicorn in a
background thread with its own event loop), which the other tests of this folder use too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlparse

from loopback import LiveServer, live_server

from workbench.engine import Engine
from workbench.serving.app import ServeConfig
from workbench.serving.server import engine_factory

T = TypeVar("T")

#: The demo pipelines every server of this folder deploys.
PIPELINES = ("tabular", "text", "embed")


@dataclass(frozen=True)
class Served:
    """A running server, as the tests see it.

    ``url`` is the base URL (``http://127.0.0.1:<port>``), ``host_port`` the
    ``127.0.0.1:<port>`` that ``tritonclient`` takes, ``engine`` the server's
    engine: read its state freely, but run its coroutines with :meth:`call`,
    on the server's own loop.
    """

    live: LiveServer

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def host_port(self) -> str:
        return urlparse(self.live.url).netloc

    @property
    def engine(self) -> Engine:
        return self.live.engine

    def call(self, make: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
        """Run ``make()`` on the server's event loop and return its result."""
        return self.live.call(make, timeout_s)


@contextmanager
def serving(config: ServeConfig | None = None, *, inprocess: bool = True, workers: int = 2,
            pipelines: Sequence[str] = PIPELINES, dashboard: bool = False) -> Iterator[Served]:
    """Serve ``pipelines`` with ``config`` on a free loopback port until the block ends, then check it stopped.

    ``inprocess=False`` runs batches on a LocalCluster of ``workers`` worker processes. The Panel
    dashboard is mounted only with ``dashboard=True`` (it has tests of its own, and takes a while to import).
    """
    config = dataclasses.replace(config or ServeConfig(), targets=list(pipelines), dashboard=dashboard)
    with live_server(engine_factory(None, workers, inprocess=inprocess), config) as live:
        yield Served(live)
    # NOTE: uvicorn ran the app's shutdown (the engine and its cluster closed) before its thread ended.
    assert not live.thread.is_alive(), "the server did not stop within two minutes"
