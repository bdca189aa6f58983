"""Preloaded into the worker processes of a LocalCluster the workbench starts: they ignore Ctrl-C, and yield
the cores to the serving process.

A Ctrl-C in a terminal reaches every process of the foreground group, Dask's
worker processes included: they would die at once, under the batches in
flight, while the serving process is still answering and stopping its traffic.
The serving process owns their lifetime instead: it shuts down gracefully on
SIGINT, then closes the cluster. (Workers of a cluster the workbench attaches
to are not touched.) If the serving process dies, its worker processes still
exit: Dask ties each to its parent.

They also run at a lower scheduling priority (``WORKBENCH_WORKER_NICE``, 5 by
default): on a machine they share with the serving process, a saturated heavy
pipeline's batches would otherwise take the cores the front needs to answer a
light pipeline's requests (an embedded one) in time. Idle cores still go to the
workers: niceness only orders who runs first when the cores are all wanted.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

__all__ = ["dask_setup"]


def dask_setup(worker: Any) -> None:
    # NOTE: a preload runs on the worker's event loop, which is the worker process's main thread.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ValueError, OSError):
        os.nice(int(os.environ.get("WORKBENCH_WORKER_NICE", "5")))
