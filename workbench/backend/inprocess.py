"""Run batches in this process, off the event loop (the backend without Dask)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from workbench._sync import run_in_lane
from workbench.backend.placement import EMBEDDED, PlacementDecision, check_placement
from workbench.pipeline.graph import Pipeline, Prediction

__all__ = ["InProcessBackend", "InProcessRunner"]


class InProcessRunner:
    """A ``run_batch`` for :class:`~workbench.batching.DynamicBatcher` that runs the pipeline here.

    ``session.run`` releases the GIL, so batches in worker threads run in
    parallel with the event loop. The batches run on threads of their own (``instances`` of them,
    the pipeline's lanes here; one by default), so a deployment never waits behind another's.
    """

    #: Where its batches run (see :mod:`workbench.backend.placement`).
    where = EMBEDDED

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.variants = {s.name: s.variant for s in pipeline.inference_stages}
        self.lanes = ThreadPoolExecutor(pipeline.instances or 1, thread_name_prefix=f"lane-{pipeline.name}")

    async def aclose(self) -> None:
        """No new batch starts on its lanes; one running now finishes."""
        self.lanes.shutdown(wait=False)

    def snapshot(self) -> dict[str, Any]:
        reason = "this workbench runs every batch in its own process (no cluster)"
        return {"placement": "inprocess", "where": EMBEDDED, "decision": PlacementDecision(EMBEDDED, reason).to_dict()}

    async def __call__(self, tensors: dict[str, np.ndarray]) -> Prediction:
        prediction = await run_in_lane(self.lanes, self.pipeline.execute, tensors)
        prediction.variants = dict(self.variants)
        return prediction


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

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dashboard_link": None, "workers": {}}

    async def close(self) -> None:
        self._deployed.clear()
