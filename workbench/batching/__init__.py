"""Dynamic batching: requests merged into batches under live knobs."""

from __future__ import annotations

from workbench.batching.autotune import AutoTuner, TuningRules
from workbench.batching.batch import merge, split
from workbench.batching.batcher import BatcherClosed, DeadlineExceeded, DynamicBatcher, Overloaded

__all__ = ["AutoTuner", "BatcherClosed", "DeadlineExceeded", "DynamicBatcher", "Overloaded", "TuningRules", "merge",
           "split"]
