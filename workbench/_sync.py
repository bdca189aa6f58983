"""The one seam between the event loop and blocking work.

Blocking calls (``session.run``, pre-processing) never run on the event loop:
they go through :func:`run_in_threadpool` (anyio's worker threads), or, for a
deployment's batches, :func:`run_in_lane` (threads of that deployment's own).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import ParamSpec, TypeVar

import anyio.to_thread

__all__ = ["aclose", "run_in_lane", "run_in_threadpool"]

P = ParamSpec("P")
T = TypeVar("T")


async def run_in_threadpool(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking callable in a worker thread and await its result."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def run_in_lane(lane: Executor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking callable on a deployment's own threads and await its result.

    NOTE: the executor's future straight on the loop: anyio's hand-off (its run-variable look-ups,
    limiter and cancel scope) cost a tenth of a light request's time in the serving process.
    """
    return await asyncio.get_running_loop().run_in_executor(lane, functools.partial(fn, *args, **kwargs))


async def aclose(thing: object) -> None:
    """Await ``thing.aclose()`` where it has one (runners and observers with threads or tasks of their own)."""
    close = getattr(thing, "aclose", None)
    if close is not None:
        await close()
