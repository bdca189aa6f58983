"""Preloaded into the worker processes of a LocalCluster the workbench starts: they ignore Ctrl-C.

A Ctrl-C in a terminal reaches every process of the foreground group, Dask's
worker processes included: they would die at once, under the batches in
flight, while the serving process is still answering and stopping its traffic.
The serving process owns their lifetime instead: it shuts down gracefully on
SIGINT, then closes the cluster. (Workers of a cluster the workbench attaches
to are not touched.) If the serving process dies, its worker processes still
exit: Dask ties each to its parent.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any

__all__ = ["dask_setup"]


def dask_setup(worker: Any) -> None:
    # NOTE: a preload runs on the worker's event loop, which is the worker process's main thread.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
