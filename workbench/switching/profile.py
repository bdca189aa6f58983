"""What each variant costs: batch run times by batch size, learnt from the batches it served.

A :class:`LatencyProfile` keeps, per batch size, the run times of recent batches
(dispatch to results: the time the batch held a worker slot). It answers the
run time at any batch size: measured sizes as they are, sizes in between by
linear interpolation, larger sizes by the per-row cost of the largest measured.

:class:`BatchGrouper` recovers served batches from answered requests, so that a
profile learns from live traffic through the engine's observers alone (nothing
is added to the batcher): requests answered from one batch carry the same
stage timings (the batch's), and their rows add up to the batch's rows.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["BatchGrouper", "LatencyProfile", "ServedBatch"]

#: Timings of a request that are its own, not its batch's (see :meth:`DynamicBatcher._dispatch`).
_OWN_TIMINGS = ("queue", "batch_formation", "total")

ServedBatch = tuple[str, int, float]
"""``(variant, rows, run time in ms)`` of one batch."""


class LatencyProfile:
    """Batch run times (ms) of one variant, by batch size.

    Parameters
    ----------
    samples_per_size
        Run times kept per batch size (the most recent).

    Examples
    --------
    >>> profile = LatencyProfile()
    >>> for ms in (4.0, 5.0, 6.0):
    ...     profile.add(1, ms)
    >>> profile.add(4, 12.0)
    >>> profile.run_ms(1), round(profile.run_ms(2), 2), profile.run_ms(8)
    (5.0, 7.33, 24.0)
    """

    def __init__(self, samples_per_size: int = 64) -> None:
        if samples_per_size < 1:
            raise ValueError("samples_per_size must be an integer >= 1")
        self.samples_per_size = samples_per_size
        self._runs: dict[int, deque[float]] = {}
        self.batches = 0

    def add(self, rows: int, run_ms: float) -> None:
        if rows < 1 or not math.isfinite(run_ms) or run_ms < 0:
            return
        runs = self._runs.get(rows)
        if runs is None:
            runs = self._runs[rows] = deque(maxlen=self.samples_per_size)
        runs.append(run_ms)
        self.batches += 1

    def __bool__(self) -> bool:
        return bool(self._runs)

    def sizes(self) -> list[int]:
        return sorted(self._runs)

    def _at(self, rows: int, q: float) -> float:
        return float(np.quantile(np.fromiter(self._runs[rows], dtype=np.float64), q))

    def run_ms(self, rows: int, q: float = 0.5) -> float:
        """The ``q`` quantile of the run time of a batch of ``rows`` rows; NaN when nothing was measured."""
        sizes = self.sizes()
        if not sizes:
            return math.nan
        if rows in self._runs:
            return self._at(rows, q)
        if rows < sizes[0]:
            # NOTE: a smaller batch is not assumed cheaper than the smallest measured: fixed costs dominate there.
            return self._at(sizes[0], q)
        if rows > sizes[-1]:
            return self._at(sizes[-1], q) * rows / sizes[-1]
        above = next(s for s in sizes if s > rows)
        below = max(s for s in sizes if s < rows)
        low, high = self._at(below, q), self._at(above, q)
        return low + (high - low) * (rows - below) / (above - below)

    def snapshot(self) -> dict[int, dict[str, float]]:
        """Per batch size measured: batches kept, median and p99 run time (ms)."""
        return {rows: {"batches": len(runs), "p50_ms": round(self._at(rows, 0.5), 3),
                       "p99_ms": round(self._at(rows, 0.99), 3)} for rows, runs in sorted(self._runs.items())}


class BatchGrouper:
    """Served batches recovered from the requests they answered, one :meth:`add` per request.

    A batch is complete once a :meth:`drain` has passed since its last request: the
    requests of one batch are answered within one pass of the event loop, and two drains
    are an interval apart, so no batch is cut in two.
    """

    def __init__(self) -> None:
        # NOTE: batch key -> [variant, rows, run ms, drains seen]; a dict, not one "current" batch, since
        # the answers of two batches that finish together may interleave.
        self._open: dict[tuple[Any, ...], list[Any]] = {}

    def add(self, variant: str, rows: int, timings_ms: Mapping[str, float]) -> None:
        try:
            run_ms = timings_ms["total"] - timings_ms["queue"] - timings_ms["batch_formation"]
        except KeyError:
            return
        stages = tuple(v for k, v in timings_ms.items() if k not in _OWN_TIMINGS)
        # NOTE: without stage timings, the run time itself (equal to the microsecond within one batch) is the key.
        key = (variant, stages) if stages else (variant, round(run_ms, 3))
        group = self._open.get(key)
        if group is None:
            self._open[key] = [variant, rows, run_ms, 0]
        else:
            group[1] += rows

    def drain(self) -> Iterator[ServedBatch]:
        """The batches complete by now (each once)."""
        for key, group in list(self._open.items()):
            if group[3]:
                del self._open[key]
                yield group[0], group[1], group[2]
            else:
                group[3] = 1
