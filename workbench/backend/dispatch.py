"""Sending a batch to a warm worker, and again to another one if that worker dies.

The batch goes straight to the worker's ``workbench_run`` handler over Dask's
own connection pool (no scheduler, no task). A call that fails because the
worker is gone (connection closed, refused, reset), or whose worker leaves the
cluster while the call waits, is sent to another worker that holds the
deployment; when none is left the call waits a while for one to come back (a
nanny restarts a killed worker in seconds) and otherwise fails
with :class:`~workbench.errors.BackendUnavailable`. A request is answered or
gets an explicit error; it is never lost or left hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from distributed.core import ConnectionPool

from workbench.backend.pool import WorkerPool
from workbench.backend.wire import decode_error, decode_tensors, encode_tensors
from workbench.backend.worker import HANDLER
from workbench.errors import BackendUnavailable, WorkbenchError
from workbench.pipeline.graph import Prediction, Segment

__all__ = ["DaskRunner"]


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
    timeout_s
        Longest one call to a worker may take before the batch fails.
    """

    def __init__(self, rpc: ConnectionPool, pool: WorkerPool, deployment: str, generation: int, *,
                 segments: Sequence[Segment] | None, resource: str, output_names: Sequence[str],
                 variants: Mapping[str, str] | None = None, wait_for_workers_s: float = 30.0,
                 timeout_s: float = 300.0) -> None:
        self._rpc = rpc
        self._pool = pool
        self.deployment = deployment
        self.generation = generation
        self.segments = list(segments) if segments is not None else None
        self.resource = resource
        self.output_names = tuple(output_names)
        self.variants = dict(variants or {})
        self.wait_for_workers_s = wait_for_workers_s
        self.timeout_s = timeout_s
        self.in_flight = 0
        self.redispatched = 0
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
                if remaining <= 0:
                    raise BackendUnavailable(
                        f"pipeline {self.deployment!r}: no worker could run the batch "
                        f"({len(failed)} failed, none ready within {self.wait_for_workers_s:g} s)")
                await self._pool.wait_for_change(min(remaining, 1.0))
                failed.clear()  # NOTE: a worker that failed is forgotten; any listed now is a new chance
                continue
            slot.in_flight += 1
            sent = time.perf_counter_ns()
            call = asyncio.ensure_future(asyncio.wait_for(
                getattr(self._rpc(slot.address), HANDLER)(
                    deployment=self.deployment, generation=self.generation, segment=segment, tensors=message),
                self.timeout_s))
            # NOTE: a worker killed while idle is only found out by the next call to it, and Dask
            # retries a refused connection for its whole connect timeout (30 s by default). The
            # scheduler drops a dead worker at once and the pool then forgets it: stop waiting then.
            lost = self._pool.watch_lost(slot.address)
            try:
                done, _ = await asyncio.wait((call, lost), return_when=asyncio.FIRST_COMPLETED)
            finally:
                slot.in_flight -= 1
                self._pool.unwatch(slot.address, lost)
                if not call.done():
                    call.cancel()
                    call.add_done_callback(_read_outcome)
            if call not in done:  # the worker left the cluster while it had the batch
                failed.add(slot.address)
                self.redispatched += 1
                continue
            try:
                reply = call.result()
            except TimeoutError:
                raise WorkbenchError(f"pipeline {self.deployment!r}: worker {slot.address} took longer than "
                                     f"{self.timeout_s:g} s for one batch", 504) from None
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
            return self._prediction(reply, sent)

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
