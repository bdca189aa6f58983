"""Real servers on loopback for the serving tests.

``server`` is the whole thing: ``workbench serve``'s app under uvicorn on a free
loopback port, its engine on the server thread's own event loop, batches on a
LocalCluster of two worker processes, and the ``tabular``, ``text`` and ``embed``
demo pipelines deployed. ``inprocess_server`` is the same with batches run in the
server process: it starts in a few seconds, for tests whose subject is the HTTP
front rather than where batches run. Both are module-scoped, and yield a
:class:`servers.Served` (``url``, ``host_port``, ``engine``, ``call``): a test that
changes what is deployed puts it back. :func:`servers.serving` starts a server with
another configuration (a token, a small body limit). ``cluster`` is a scheduler
and workers a test starts as separate processes (:class:`processes.DaskProcesses`).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import DaskProcesses
from servers import Served, serving


@pytest.fixture(scope="module")
def server(demo_home: object) -> Iterator[Served]:
    """The tabular, text and embed pipelines served over loopback, batches on a LocalCluster of 2 workers."""
    with serving(inprocess=False) as served:
        yield served


@pytest.fixture(scope="module")
def inprocess_server(demo_home: object) -> Iterator[Served]:
    """The tabular, text and embed pipelines served over loopback, batches run in the server process."""
    with serving(inprocess=True) as served:
        yield served


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[DaskProcesses]:
    """Nothing started yet: the test starts the scheduler and the workers; all are stopped at its end."""
    dask = DaskProcesses(tmp_path)
    try:
        yield dask
    finally:
        for process in dask.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # NOTE: a stopped process cannot take SIGTERM
        dask.stop()
