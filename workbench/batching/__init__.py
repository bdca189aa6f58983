"""Dynamic batching: requests merged into batches under live knobs."""

from __future__ import annotations

from workbench.batching.batch import merge, split
from workbench.batching.batcher import BatcherClosed, DynamicBatcher

__all__ = ["BatcherClosed", "DynamicBatcher", "merge", "split"]
