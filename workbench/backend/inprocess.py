"""Run batches in this process (the backend without Dask, and embedded placements beside Dask).

A batch that computes in well under a millisecond runs on the event loop itself: handing it to a lane
thread costs more than it computes. The hand-off is two wake-ups and a future across threads, and while
the lane runs the pipeline's Python stages it holds the interpreter lock that the loop then waits for.
The tabular demo in the serving process, one row per request, on 2 cores
(`wrk`, 8 s, alternating): at one connection 1290-1530 requests/s with p50 0.56-0.66 ms and 590-700 µs
of CPU a request on a lane, 1980-2220 requests/s with p50 0.39-0.43 ms and 420-470 µs on the loop; at
32 connections 3950-5190 requests/s on a lane, 4550-5530 on the loop. Heavier batches (and the first
one, before any is measured) keep to the lanes, where they never stall the loop. (A lane batch is
judged by its thread's CPU time: with sessions of several ONNX Runtime threads, as the backend without
Dask has, that is less than its wall time, and the wall time of the batches that then run inline
corrects the bound.)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from workbench._sync import run_in_lane
from workbench.backend.placement import EMBEDDED, PlacementDecision, check_placement
from workbench.pipeline.custom import has_python_stage
from workbench.pipeline.graph import Pipeline, Prediction

__all__ = ["INLINE_BELOW_MS", "InProcessBackend", "InProcessRunner", "InlineGate"]

#: A batch whose measured cost bounds under this many milliseconds runs on the event loop (see the module
#: docstring); 0 sends every batch to the lanes.
INLINE_BELOW_MS = 1.0


class InlineGate:
    """Whether a batch is light enough to run on the event loop, from recent batches' measured cost.

    A batch of ``rows`` is judged by the recent batches of as many rows or more: the upper quartile of
    their costs (a rare slow one, a pause or the machine's other work, does not move it). Larger than any
    recent one, it costs at most ``rows / r`` times what the largest (``r`` rows) cost, since the per-batch
    part of the cost does not grow with rows. With nothing measured yet, no batch runs inline.
    """

    def __init__(self, below_ms: float = INLINE_BELOW_MS, size: int = 16) -> None:
        if below_ms < 0:
            raise ValueError("inline_below_ms must be >= 0")
        self.below_ms = below_ms
        self._rows: deque[int] = deque(maxlen=size)
        self._costs: deque[float] = deque(maxlen=size)

    def bound_ms(self, rows: int) -> float | None:
        """The cost expected of a batch of ``rows`` (``None`` before any batch is measured)."""
        if not self._costs:
            return None
        recent = list(zip(self._rows, self._costs))
        covering = [ms for measured, ms in recent if measured >= rows]
        if covering:
            return _upper_quartile(covering)
        largest = max(self._rows)
        return _upper_quartile([ms for measured, ms in recent if measured == largest]) * rows / largest

    def allows(self, rows: int) -> bool:
        if self._costs and rows <= max(self._rows) and max(self._costs) < self.below_ms:
            return True  # NOTE: the common case, without sorting (every batch asks)
        bound = self.bound_ms(rows)
        return bound is not None and bound < self.below_ms

    def add(self, rows: int, cost_ms: float) -> None:
        self._rows.append(max(rows, 1))
        self._costs.append(cost_ms)


def _upper_quartile(values: list[float]) -> float:
    return sorted(values)[(3 * len(values)) // 4]


class InProcessRunner:
    """A ``run_batch`` for :class:`~workbench.batching.DynamicBatcher` that runs the pipeline here.

    ``session.run`` releases the GIL, so batches in worker threads run in
    parallel with the event loop. The batches run on threads of their own (``instances`` of them,
    the pipeline's lanes here; one by default), so a deployment never waits behind another's; those
    that :class:`InlineGate` finds light run on the event loop instead.
    """

    #: Where its batches run (see :mod:`workbench.backend.placement`).
    where = EMBEDDED

    def __init__(self, pipeline: Pipeline, *, inline_below_ms: float = INLINE_BELOW_MS) -> None:
        self.pipeline = pipeline
        self.variants = {s.name: s.variant for s in pipeline.inference_stages}
        self.instances = pipeline.instances or 1
        self.lanes = ThreadPoolExecutor(self.instances, thread_name_prefix=f"lane-{pipeline.name}")
        # NOTE: user code (a ``python`` stage) may block or wait on I/O: it never runs on the loop.
        self.gate = InlineGate(0.0 if has_python_stage(pipeline.stages) else inline_below_ms)
        #: Batches run on the event loop and on the lanes.
        self.runs = {"inline": 0, "lane": 0}

    async def aclose(self) -> None:
        """No new batch starts on its lanes; one running now finishes."""
        self.lanes.shutdown(wait=False)

    def snapshot(self) -> dict[str, Any]:
        reason = "this workbench runs every batch in its own process (no cluster)"
        return {"placement": "inprocess", "where": EMBEDDED, "decision": PlacementDecision(EMBEDDED, reason).to_dict(),
                "embedded": self.describe()}

    def describe(self) -> dict[str, Any]:
        """Where its batches ran: on the event loop (``inline``) or on the lanes, and the bound that decides."""
        return {"runs": dict(self.runs), "lanes": self.instances, "inline_below_ms": self.gate.below_ms}

    async def __call__(self, tensors: dict[str, np.ndarray]) -> Prediction:
        rows = next(iter(tensors.values())).shape[0] if tensors else 1
        if self.gate.allows(rows):
            self.runs["inline"] += 1
            prediction = self.pipeline.execute(tensors)
            cost_ms = sum(prediction.timings_ms.values())
        else:
            self.runs["lane"] += 1
            prediction, cost_ms = await run_in_lane(self.lanes, self._execute_on_lane, tensors)
        self.gate.add(rows, cost_ms)
        prediction.variants = dict(self.variants)
        return prediction

    def _execute_on_lane(self, tensors: dict[str, np.ndarray]) -> tuple[Prediction, float]:
        """The prediction and the lane thread's CPU time for it, in ms.

        NOTE: CPU time, not the stages' wall time: on a lane, the wall time includes the waits for the
        interpreter lock that the loop holds meanwhile, which is the hand-off's cost, not the batch's; judged
        by it, a batch that would be light inline looks heavy for as long as it runs on a lane.
        """
        started = time.thread_time_ns()
        prediction = self.pipeline.execute(tensors)
        return prediction, (time.thread_time_ns() - started) / 1e6


class InProcessBackend:
    """Batches run in this process (notebooks, tests, a single machine without Dask)."""

    kind = "inprocess"
    loads_locally = True
    #: Batches run one at a time, each on every core: a second one in flight would only compete with it.
    in_flight_per_thread = 1

    def __init__(self) -> None:
        self._published: dict[str, Any] = {}
        self._deployed: dict[tuple[str, int], Pipeline] = {}

    def on_workers_changed(self, listener: Callable[[], None]) -> None:
        """Nothing to follow: this process is the only worker."""

    async def deploy(self, name: str, generation: int, pipeline: Pipeline, placement: str = "auto") -> InProcessRunner:
        check_placement(placement)
        self._deployed[name, generation] = pipeline
        return InProcessRunner(pipeline)

    async def place(self, name: str, generation: int, pipeline: Pipeline, placement: str) -> InProcessRunner:
        """Every placement runs here: there is no worker to place a batch on."""
        check_placement(placement)
        return InProcessRunner(self._deployed.get((name, generation), pipeline))

    async def retire(self, name: str, generation: int) -> None:
        self._deployed.pop((name, generation), None)

    def workers(self, name: str, generation: int) -> list[dict[str, Any]]:
        pipeline = self._deployed.get((name, generation))
        if pipeline is None:
            return []
        providers = {s.name: s.provider for s in pipeline.inference_stages}
        return [{"address": "inprocess", "resources": {}, "nthreads": 1, "providers": providers, "in_flight": 0}]

    def threads(self, name: str, generation: int) -> int:
        return 1

    async def publish(self, name: str, state: dict[str, Any] | None) -> None:
        if state is None:
            self._published.pop(name, None)
        else:
            self._published[name] = state

    async def published(self) -> dict[str, Any]:
        return dict(self._published)

    async def publish_change(self, name: str, fields: Mapping[str, Any], *,
                             expect_generation: int | None = None) -> None:
        """As :meth:`DaskBackend.publish_change`; in one process nothing races it."""
        state = self._published.get(name)
        if state is None:
            return
        for path, value in fields.items():
            node = state
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value

    async def next_generation(self, name: str, current: int) -> int:
        return current + 1

    def on_state_change(self, listener: Callable[[str], None]) -> None:
        """Nothing else serves this process's deployments: no change comes from elsewhere."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dashboard_link": None, "workers": {}}

    async def close(self) -> None:
        self._deployed.clear()
