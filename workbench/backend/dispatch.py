"""Sending a batch to a warm worker, and again to another one if that worker dies or goes silent.

The batch goes straight to the worker's ``workbench_run`` handler over Dask's
own connection pool (no scheduler, no task). A call that fails because the
worker is gone (connection closed, refused, reset), or whose worker leaves the
cluster while the call waits, is sent to another worker that holds the
deployment. So is a call that has waited past its hang deadline (see
:mod:`workbench.backend.hung`): its worker is cordoned until it answers a
heartbeat. When no worker is left the call waits a while for one to come back
(a nanny restarts a killed worker in seconds) and otherwise fails
with :class:`~workbench.errors.BackendUnavailable`. A request is answered or
gets an explicit error; it is never lost or left hanging.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from distributed.core import ConnectionPool

from workbench.backend.hung import CallTimes, HangRule, heartbeat
from workbench.backend.pool import WorkerPool
from workbench.backend.wire import decode_error, decode_tensors, encode_tensors
from workbench.backend.worker import HANDLER, PING
from workbench.errors import BackendUnavailable
from workbench.pipeline.graph import Prediction, Segment

__all__ = ["DaskRunner"]

logger = logging.getLogger(__name__)
#: The heartbeats under way (asyncio keeps only weak references to tasks).
_HEARTBEATS: set[asyncio.Task[None]] = set()


class DaskRunner:
    """A ``run_batch`` for :class:`~workbench.batching.DynamicBatcher` that runs on Dask workers.

    Parameters
    ----------
    rpc
        The client's connection pool (``client.rpc``).
    pool
        Which workers hold which deployment generation.
    deployment, generation
        What to run.
    segments
        ``None`` runs the whole pipeline on one worker (fused, no transfers in
        between); otherwise each segment runs on a worker with its resource.
    resource
        For a fused pipeline: ``"gpu"`` when any stage wants a GPU.
    output_names
        The pipeline's outputs (for segmented runs).
    variants
        The variant of each inference stage in this generation (reported with each prediction).
    wait_for_workers_s
        How long a batch waits for a worker when none is ready.
    hang
        When a call counts as hung (default: from the settings, ``WORKBENCH_HANG_*``).
    """

    def __init__(self, rpc: ConnectionPool, pool: WorkerPool, deployment: str, generation: int, *,
                 segments: Sequence[Segment] | None, resource: str, output_names: Sequence[str],
                 variants: Mapping[str, str] | None = None, wait_for_workers_s: float = 30.0,
                 hang: HangRule | None = None) -> None:
        self._rpc = rpc
        self._pool = pool
        self.deployment = deployment
        self.generation = generation
        self.segments = list(segments) if segments is not None else None
        self.resource = resource
        self.output_names = tuple(output_names)
        self.variants = dict(variants or {})
        self.wait_for_workers_s = wait_for_workers_s
        self.hang = hang or HangRule.from_settings()
        self.in_flight = 0
        self.redispatched = 0
        #: Calls that passed their hang deadline (each was sent again).
        self.hung = 0
        #: Hears of ``("worker_cordoned" | "worker_uncordoned", details)``; set by the engine.
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None
        # NOTE: one record per segment: a tokenising segment and an encoder segment take different times.
        self._times: dict[int | None, CallTimes] = {}
        self._labels = ["+".join(s.stages) for s in self.segments] if self.segments is not None else []

    @property
    def key(self) -> tuple[str, int]:
        return self.deployment, self.generation

    async def __call__(self, tensors: dict[str, np.ndarray]) -> Prediction:
        self.in_flight += 1
        try:
            if self.segments is None:
                prediction = await self._call(None, self.resource, tensors)
                prediction.variants = dict(self.variants)
                return prediction
            env = dict(tensors)
            timings: dict[str, float] = {}
            counters: dict[str, dict[str, int]] = {}
            for index, segment in enumerate(self.segments):
                part = await self._call(index, segment.resource, {n: env[n] for n in segment.inputs})
                env.update(part.outputs)
                for name, ms in part.timings_ms.items():
                    timings[name] = timings.get(name, 0.0) + ms
                counters.update(part.counters)
            return Prediction({n: env[n] for n in self.output_names}, timings, dict(self.variants),
                              counters=counters)
        finally:
            self.in_flight -= 1

    async def _call(self, segment: int | None, resource: str, tensors: dict[str, np.ndarray]) -> Prediction:
        message = encode_tensors(tensors)
        deadline = time.monotonic() + self.wait_for_workers_s
        failed: set[str] = set()
        while True:
            slot = self._pool.choose(self.key, resource, exclude=failed)
            if slot is None:
                remaining = deadline - time.monotonic()
                if self._pool.unreachable is not None:
                    # NOTE: no worker joins a cluster whose scheduler is gone: say so at once, do not wait.
                    raise BackendUnavailable(f"pipeline {self.deployment!r}: no worker is left to run the batch, "
                                             f"and {self._pool.unreachable}")
                if remaining <= 0:
                    raise BackendUnavailable(
                        f"pipeline {self.deployment!r}: no worker could run the batch "
                        f"({len(failed)} failed, none ready within {self.wait_for_workers_s:g} s)")
                await self._pool.wait_for_change(min(remaining, 1.0))
                failed.clear()  # NOTE: a worker that failed is forgotten; any listed now is a new chance
                continue
            slot.in_flight += 1
            sent = time.perf_counter_ns()
            times = self._times.get(segment) or self._times.setdefault(segment, CallTimes(self.hang))
            deadline_s = times.deadline_s()
            call = asyncio.ensure_future(getattr(self._rpc(slot.address), HANDLER)(
                deployment=self.deployment, generation=self.generation, segment=segment, tensors=message))
            # NOTE: a worker killed while idle is only found out by the next call to it, and Dask
            # retries a refused connection for its whole connect timeout (30 s by default). The
            # scheduler drops a dead worker at once and the pool then forgets it: stop waiting then.
            lost = self._pool.watch_lost(slot.address)
            try:
                done, _ = await asyncio.wait((call, lost), timeout=deadline_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                slot.in_flight -= 1
                self._pool.unwatch(slot.address, lost)
                if not call.done():
                    call.cancel()
                    call.add_done_callback(_read_outcome)
            if not done:  # silent past the deadline: another worker takes the batch
                self._silent(slot.address, deadline_s)
                failed.add(slot.address)
                self.redispatched += 1
                continue
            if call not in done:  # the worker left the cluster while it had the batch
                failed.add(slot.address)
                self.redispatched += 1
                continue
            try:
                reply = call.result()
            except OSError:  # CommClosedError and friends: the worker is gone or unreachable
                self._pool.forget_worker(slot.address)
                failed.add(slot.address)
                self.redispatched += 1
                continue
            if reply.get("missing"):
                # NOTE: the worker no longer (or not yet) holds this generation; try another.
                self._pool.discard(self.key, slot.address)
                failed.add(slot.address)
                continue
            if "error" not in reply:
                label = "pipeline" if segment is None else self._labels[segment]
                slot.ran[label] = slot.ran.get(label, 0) + 1
                times.add((time.perf_counter_ns() - sent) / 1e9)
            return self._prediction(reply, sent)

    def deadline_s(self) -> float:
        """The hang deadline of the next call (of the slowest segment, for a segmented pipeline)."""
        return max((times.deadline_s() for times in self._times.values()), default=self.hang.first_s)

    def _silent(self, address: str, deadline_s: float) -> None:
        """A call to ``address`` passed its deadline: cordon the worker, and ping it until it answers."""
        self.hung += 1
        reason = f"no answer to a batch of {self.deployment!r} within {deadline_s:.2f} s"
        if not self._pool.cordon(address, reason):
            return  # NOTE: cordoned already; the heartbeat that did it goes on
        logger.warning("worker %s cordoned: %s", address, reason)
        self._tell("worker_cordoned", worker=address, reason=reason, deadline_s=deadline_s)
        # NOTE: the heartbeat outlives this runner if need be (a swap retires it): a worker is never left cordoned
        # for want of someone to ping it. It ends when the worker answers, or is forgotten (dead, or closed).
        task = asyncio.get_running_loop().create_task(self._until_it_answers(address), name=f"heartbeat-{address}")
        _HEARTBEATS.add(task)
        task.add_done_callback(_HEARTBEATS.discard)

    async def _until_it_answers(self, address: str) -> None:
        began = time.monotonic()

        def ping() -> Any:
            return getattr(self._rpc(address), PING)(deployment=self.deployment, generation=self.generation)

        answered = await heartbeat(ping, self.hang, gone=lambda: address not in self._pool.cordoned)
        if answered and self._pool.uncordon(address):
            silent_s = time.monotonic() - began
            logger.warning("worker %s answered a heartbeat after %.1f s: back in service", address, silent_s)
            self._tell("worker_uncordoned", worker=address, silent_s=round(silent_s, 3))

    def _tell(self, event: str, **details: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event, details)
            except Exception:  # NOTE: a listener's failure must not fail the batch
                logger.exception("an event listener failed")

    @staticmethod
    def _prediction(reply: dict[str, Any], sent_ns: int) -> Prediction:
        if "error" in reply:
            raise decode_error(reply["error"])
        round_trip_ms = (time.perf_counter_ns() - sent_ns) / 1e6
        timings = dict(reply["timings"])
        # NOTE: everything of the round trip outside the stages (comm, (de)serialising, the worker's
        # thread hand-off) counts as transfer, so that a request's timings add up to its total.
        timings["transfer"] = max(round_trip_ms - sum(timings.values()), 0.0)
        counters = {stage: dict(counts) for stage, counts in (reply.get("counters") or {}).items()}
        return Prediction(decode_tensors(reply["outputs"]), timings, counters=counters)


def _read_outcome(call: asyncio.Future[Any]) -> None:
    """Read an abandoned call's outcome, so that asyncio does not report it as never retrieved."""
    if not call.cancelled():
        call.exception()
