"""The one seam between a view and the engine's event loop.

The engine is used from its own loop only. Under ``workbench serve`` that loop
is uvicorn's, and Panel's sessions (mounted in the same FastAPI app) run their
callbacks on it too: a call is then a plain call, with no hop and no lock. In
a notebook the engine runs on the :class:`~workbench.api.Workbench`'s
background loop while Panel runs its callbacks on the kernel's: a call then
goes through the Workbench's portal (and waits for it), and a long action
(a variant swap) is started there and polled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from workbench.engine import Engine

__all__ = ["EngineLink", "Pending"]

T = TypeVar("T")


class Pending(Protocol):
    """An action started on the engine's loop: an :class:`asyncio.Task` or a :class:`concurrent.futures.Future`."""

    def done(self) -> bool: ...
    def result(self) -> Any: ...
    def exception(self) -> BaseException | None: ...


class EngineLink:
    """Calls onto the engine's loop, from that loop or from another thread.

    Parameters
    ----------
    engine
        The engine the views read and drive.
    loop
        The loop the engine lives on.
    portal
        The Workbench's portal onto that loop (notebooks); without one, calls from
        another thread go through :func:`asyncio.run_coroutine_threadsafe`.
    timeout_s
        Longest wait for a call made from another thread.

    Examples
    --------
    >>> link = EngineLink(engine, asyncio.get_running_loop())        # doctest: +SKIP
    >>> link.call(engine.set_batching, "tabular", max_batch_size=8)   # doctest: +SKIP
    >>> pending = link.start(engine.swap, "tabular", "logreg")       # doctest: +SKIP
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, portal: BlockingPortal | None = None,
                 timeout_s: float = 30.0) -> None:
        self.engine = engine
        self.loop = loop
        self.portal = portal
        self.timeout_s = timeout_s
        # NOTE: the loop keeps only weak references to tasks: hold the ones started here until they finish.
        self._tasks: set[asyncio.Task[Any]] = set()

    def on_engine_loop(self) -> bool:
        """Whether the caller runs on the engine's loop (then calls need no hop)."""
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run the plain function ``fn`` on the engine's loop and return what it returns (or raise what it raises)."""
        if self.on_engine_loop():
            return fn(*args, **kwargs)

        async def run() -> T:
            return fn(*args, **kwargs)

        if self.portal is not None:
            return self.portal.call(run)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(self.timeout_s)

    def start(self, fn: Callable[..., Awaitable[T]], *args: Any) -> Pending:
        """Start the coroutine function ``fn(*args)`` on the engine's loop; poll what comes back."""
        if self.on_engine_loop():
            task = self.loop.create_task(_awaited(fn, *args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return task
        if self.portal is not None:
            return self.portal.start_task_soon(_awaited, fn, *args)
        return asyncio.run_coroutine_threadsafe(_awaited(fn, *args), self.loop)


async def _awaited(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)
