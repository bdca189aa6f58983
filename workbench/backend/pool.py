"""Which workers hold which deployment, and which one takes the next batch.

Workers announce themselves on the event topic when a deployment is warm on
them; a worker that fails a call, or that the scheduler no longer lists, is
forgotten at once (a restarted worker comes back under a new address and
announces itself again). A worker that went silent is cordoned: it stays
listed but takes no batch until it answers a heartbeat (see :mod:`workbench.backend.hung`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WorkerPool", "WorkerSlot"]

Key = tuple[str, int]


@dataclass(slots=True)
class WorkerSlot:
    """One worker holding one deployment generation."""

    address: str
    resources: dict[str, float] = field(default_factory=dict)
    nthreads: int = 1
    providers: dict[str, str | None] = field(default_factory=dict)
    in_flight: int = 0
    #: Batches this worker answered, by what it ran (``"pipeline"`` fused, else the segment's stages).
    ran: dict[str, int] = field(default_factory=dict)

    @property
    def has_gpu(self) -> bool:
        return self.resources.get("GPU", 0) > 0

    def describe(self) -> dict[str, Any]:
        return {"address": self.address, "resources": self.resources, "nthreads": self.nthreads,
                "providers": self.providers, "in_flight": self.in_flight, "ran": dict(self.ran)}


class WorkerPool:
    """Ready workers per ``(deployment, generation)``; picks the least busy for a batch.

    ``on_change`` is called (on the event loop) whenever the set of ready workers changes.
    """

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._ready: dict[Key, dict[str, WorkerSlot]] = {}
        self._changed = asyncio.Event()
        self._turn = itertools.count()
        self._on_change = on_change
        self._lost: dict[str, set[asyncio.Future[None]]] = {}
        #: Silent workers, by address: since when (epoch seconds), and why.
        self.cordoned: dict[str, dict[str, Any]] = {}
        #: Why no worker can come back now (the scheduler does not answer); ``None`` while one may.
        self.unreachable: str | None = None

    # -- membership -------------------------------------------------------------------
    def on_event(self, event: tuple[float, Mapping[str, Any]]) -> None:
        """Handler for the workers' event topic."""
        _, message = event
        key = (message["deployment"], message["generation"])
        if message["event"] == "ready":
            self.add(key, message["worker"], resources=message.get("resources"), nthreads=message.get("nthreads"),
                     providers=message.get("providers"))
        elif message["event"] == "gone":
            self.discard(key, message["worker"])

    def add(self, key: Key, address: str, *, resources: Mapping[str, float] | None = None,
            nthreads: int | None = None, providers: Mapping[str, str | None] | None = None) -> None:
        slots = self._ready.setdefault(key, {})
        slot = slots.get(address)
        if slot is None:
            slot = slots[address] = WorkerSlot(address)
        if resources is not None:
            slot.resources = dict(resources)
        if nthreads is not None:
            slot.nthreads = nthreads
        if providers:
            slot.providers = dict(providers)
        self._notify()

    def discard(self, key: Key, address: str) -> None:
        if self._ready.get(key, {}).pop(address, None) is not None:
            self._notify()

    def cordon(self, address: str, reason: str) -> bool:
        """Send ``address`` no batch of any deployment until :meth:`uncordon`; False if it already was."""
        if address in self.cordoned:
            return False
        self.cordoned[address] = {"since": time.time(), "reason": reason}
        self._notify()
        return True

    def uncordon(self, address: str) -> bool:
        """Put a cordoned worker back in service; False if it was not cordoned (or was forgotten)."""
        if self.cordoned.pop(address, None) is None:
            return False
        self._notify()
        return True

    def forget_worker(self, address: str) -> None:
        """Drop a worker from every deployment (it died or left the cluster)."""
        self.cordoned.pop(address, None)
        removed = [slots.pop(address) for slots in self._ready.values() if address in slots]
        for watcher in self._lost.pop(address, ()):
            if not watcher.done():
                watcher.set_result(None)
        if removed:
            self._notify()

    def keep_only(self, addresses: Iterable[str]) -> None:
        """Forget workers the scheduler no longer lists."""
        alive = set(addresses)
        for address in {a for slots in self._ready.values() for a in slots} - alive:
            self.forget_worker(address)

    def drop(self, key: Key) -> None:
        """Forget a deployment generation (undeployed or replaced)."""
        if self._ready.pop(key, None):
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        if self._on_change is not None:
            self._on_change()

    # -- reading ----------------------------------------------------------------------
    def generations(self) -> list[Key]:
        """The deployment generations that have ready workers."""
        return list(self._ready)

    def workers(self, key: Key) -> list[WorkerSlot]:
        return list(self._ready.get(key, {}).values())

    def threads(self, key: Key) -> int:
        return sum(slot.nthreads for slot in self._ready.get(key, {}).values())

    def choose(self, key: Key, resource: str, exclude: set[str] | frozenset[str] = frozenset()) -> WorkerSlot | None:
        """The least busy ready worker for a batch that wants ``resource``.

        A ``gpu`` batch goes to a GPU worker when there is one (any worker
        otherwise: its sessions then run on the CPU); a ``cpu`` batch prefers
        workers without a GPU, leaving those free for GPU work. Cordoned workers take none.
        """
        candidates = [s for s in self._ready.get(key, {}).values()
                      if s.address not in exclude and s.address not in self.cordoned]
        if not candidates:
            return None
        if resource == "gpu":
            gpu = [s for s in candidates if s.has_gpu]
            candidates = gpu or candidates
        turn = next(self._turn)
        # NOTE: load per thread first; then CPU work away from GPU workers; then round robin among equals.
        return min(
            enumerate(candidates),
            key=lambda item: (item[1].in_flight / max(item[1].nthreads, 1),
                              resource == "cpu" and item[1].has_gpu, (item[0] - turn) % len(candidates)),
        )[1]

    def watch_lost(self, address: str) -> asyncio.Future[None]:
        """A future that is done once ``address`` is forgotten (see :meth:`forget_worker`).

        Give it back with :meth:`unwatch` when it is no longer needed.
        """
        watcher: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost.setdefault(address, set()).add(watcher)
        return watcher

    def unwatch(self, address: str, watcher: asyncio.Future[None]) -> None:
        watchers = self._lost.get(address)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._lost[address]

    async def wait_for_change(self, timeout_s: float) -> None:
        """Return when the set of ready workers changes, or after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)
