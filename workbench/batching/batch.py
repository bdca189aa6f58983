"""Merging requests into one batch, splitting the results back, and the batch as it was answered.

Requests are stacked along the batch axis. Where their other dimensions
differ (token sequences of different lengths), they are padded to the longest
of the batch with the tensor's pad value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from workbench.pipeline.graph import Prediction

__all__ = ["AnsweredBatch", "merge", "split"]


@dataclass(slots=True)
class AnsweredBatch:
    """One batch as it was answered: what the serving process records once per batch, not per request.

    The arrays are referenced, not copied: nothing writes to them once the batch is answered.
    """

    inputs: dict[str, np.ndarray]
    """The merged tensors the pipeline ran on."""
    outputs: dict[str, np.ndarray]
    """Its merged outputs."""
    requests: list[dict[str, np.ndarray]]
    """Each request's own tensors, in the batch's order."""
    predictions: list[Prediction]
    """Each request's answer: its outputs, timings and id."""
    variants: dict[str, str]
    """The variant of each inference stage that computed it (when the runner knows it)."""
    run_ms: float
    """Dispatch to results."""

    @property
    def rows(self) -> int:
        return sum(next(iter(r.values())).shape[0] for r in self.requests) if self.requests else 0


def _pad_to(array: np.ndarray, shape: tuple[int, ...], value: Any) -> np.ndarray:
    if array.shape[1:] == shape:
        return array
    out = np.full((array.shape[0], *shape), value, dtype=array.dtype)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


def merge(requests: Sequence[Mapping[str, np.ndarray]], pad_values: Mapping[str, Any] | None = None
          ) -> dict[str, np.ndarray]:
    """Stack the tensors of several requests along axis 0, padding ragged dimensions."""
    if len(requests) == 1:
        return dict(requests[0])
    merged = {}
    for name in requests[0]:
        parts = [r[name] for r in requests]
        inner = {p.shape[1:] for p in parts}
        if len(inner) > 1:
            ranks = {len(s) for s in inner}
            if len(ranks) > 1:
                raise ValueError(f"tensor {name!r}: requests of different ranks cannot share a batch")
            longest = tuple(max(dims) for dims in zip(*inner))
            pad = (pad_values or {}).get(name, 0)
            parts = [_pad_to(p, longest, pad) for p in parts]
        merged[name] = np.concatenate(parts)
    return merged


def split(outputs: Mapping[str, np.ndarray], rows: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Slice batch outputs back into one mapping per request (views, no copies)."""
    pieces = []
    start = 0
    for count in rows:
        pieces.append({name: value[start:start + count] for name, value in outputs.items()})
        start += count
    return pieces
