"""Run batches in this process, off the event loop."""

from __future__ import annotations

import numpy as np

from workbench._sync import run_in_threadpool
from workbench.pipeline.graph import Pipeline, Prediction

__all__ = ["InProcessRunner"]


class InProcessRunner:
    """A ``run_batch`` for :class:`~workbench.batching.DynamicBatcher` that runs the pipeline here.

    ``session.run`` releases the GIL, so batches in worker threads run in
    parallel with the event loop.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def __call__(self, tensors: dict[str, np.ndarray]) -> Prediction:
        return await run_in_threadpool(self.pipeline.execute, tensors)
