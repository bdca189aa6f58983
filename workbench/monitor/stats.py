"""Rolling statistics: percentiles, rates and histograms over a recent time window.

:class:`BatcherStats` is where a batcher reports what happens to its requests
and batches; a :class:`StatsObserver` attached to it (the Prometheus metrics
of :mod:`workbench.monitor.metrics`) hears of each event as it is recorded.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["BatcherStats", "RollingWindow", "StatsObserver"]


class RollingWindow:
    """Samples of the last ``window_s`` seconds (at most ``max_samples`` of them).

    Kept in two numpy ring buffers (times, values): adding is O(1) on the
    request path, and reading a full window is a slice, not a walk over Python
    objects (a dashboard reads every window once a second).

    Examples
    --------
    >>> window = RollingWindow(window_s=60)
    >>> for ms in (1.0, 2.0, 3.0):
    ...     window.add(ms)
    >>> window.percentiles()["p50"]
    2.0
    """

    def __init__(self, window_s: float = 60.0, max_samples: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        if max_samples < 1:
            raise ValueError("max_samples must be >= 1")
        self.window_s = window_s
        self._clock = clock
        self._times = np.empty(max_samples, dtype=np.float64)
        self._values = np.empty(max_samples, dtype=np.float64)
        self._next = 0
        self._count = 0

    def add(self, value: float) -> None:
        index = self._next
        self._times[index] = self._clock()
        self._values[index] = value
        self._next = index + 1 if index + 1 < self._times.size else 0
        if self._count < self._times.size:
            self._count += 1

    def extend(self, values: Sequence[float] | float, count: int | None = None) -> None:
        """Add several samples at once: ``values``, or one value ``count`` times (a batch's stage time)."""
        # NOTE: a batch of one request (a light load): scalar stores cost a tenth of the slices below.
        if count == 1 and isinstance(values, float | int):
            self.add(values)
            return
        if count is None and isinstance(values, list | tuple) and len(values) == 1:
            self.add(values[0])
            return
        block = np.asarray(values, dtype=np.float64).ravel() if count is None else None
        n = block.size if block is not None else count or 0
        capacity = self._times.size
        if n > capacity:
            block, n = (block[-capacity:] if block is not None else None), capacity
        now = self._clock()
        start = self._next
        head = min(n, capacity - start)
        self._times[start:start + head] = now
        self._values[start:start + head] = block[:head] if block is not None else values
        if n > head:
            self._times[:n - head] = now
            self._values[:n - head] = block[head:] if block is not None else values
        self._next = (start + n) % capacity
        self._count = min(self._count + n, capacity)

    def _ordered(self, last_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Times and values in the window (or its last ``last_s`` seconds), oldest first."""
        capacity = self._times.size
        start = (self._next - self._count) % capacity
        if start + self._count <= capacity:
            times = self._times[start:start + self._count]
            values = self._values[start:start + self._count]
        else:
            times = np.concatenate((self._times[start:], self._times[:self._next]))
            values = np.concatenate((self._values[start:], self._values[:self._next]))
        horizon = self._clock() - (self.window_s if last_s is None else min(last_s, self.window_s))
        # NOTE: samples are in time order, so the first one inside the horizon is a binary search away.
        first = int(np.searchsorted(times, horizon, side="left"))
        if last_s is None:
            self._count -= first  # forget what left the window
        return times[first:], values[first:]

    def values(self, last_s: float | None = None) -> np.ndarray:
        """The samples in the window, or only those of the last ``last_s`` seconds."""
        return self._ordered(last_s)[1]

    def __len__(self) -> int:
        return int(self._ordered()[1].size)

    def percentiles(self, qs: tuple[int, ...] = (50, 95, 99), last_s: float | None = None) -> dict[str, float]:
        """``{"p50": ..., "p95": ..., "p99": ...}``; NaN when the window (or its last ``last_s`` seconds) is empty."""
        values = self.values(last_s)
        if values.size == 0:
            return {f"p{q}": float("nan") for q in qs}
        return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(values, qs))}

    def rate(self, last_s: float | None = None) -> float:
        """Samples per second over the window (or over the time since the first sample, if shorter).

        With ``last_s``, over the last ``last_s`` seconds only (at most the window).
        """
        times, _ = self._ordered()
        if times.size == 0:
            return 0.0
        if last_s is not None:
            return self.values(last_s).size / min(last_s, self.window_s)
        span = min(self.window_s, max(self._clock() - float(times[0]), 1e-3))
        return times.size / span

    def total(self, last_s: float | None = None) -> float:
        """The sum of the samples in the window (or in its last ``last_s`` seconds)."""
        return float(self.values(last_s).sum())


class StatsObserver(Protocol):
    """Hears of each event a :class:`BatcherStats` records, as it is recorded (on the batcher's event loop).

    Durations are in the units of the records: request timings in ms, batch run time in s.
    """

    def requests_done(self, shared_ms: Mapping[str, float], each_ms: Mapping[str, Sequence[float]],
                      count: int) -> None: ...
    def request_failed(self, status_code: int, requests: int) -> None: ...
    def request_rejected(self) -> None: ...
    def request_expired(self) -> None: ...
    def batch_dispatched(self, rows: int) -> None: ...
    def batch_ran(self, seconds: float) -> None: ...
    def stages_counted(self, counts: Mapping[str, Mapping[str, int]]) -> None: ...


class BatcherStats:
    """What a batcher has done recently: per-request timings, batch sizes, errors.

    Parameters
    ----------
    window_s
        How far back percentiles and rates look.
    observer
        Told of every event as it is recorded (see :class:`StatsObserver`); it may
        also be set later through the ``observer`` attribute.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 observer: StatsObserver | None = None) -> None:
        self.window_s = window_s
        self._clock = clock
        self.observer = observer
        self.latency_ms = RollingWindow(window_s, clock=clock)
        self.batch_sizes = RollingWindow(window_s, clock=clock)
        self.errors = RollingWindow(window_s, clock=clock)
        self.rejections = RollingWindow(window_s, clock=clock)
        self.batch_run_s = RollingWindow(window_s, clock=clock)
        self.timings_ms: dict[str, RollingWindow] = {}
        self.requests_total = 0
        self.errors_total = 0
        self.rejected_total = 0
        self.expired_total = 0
        self.batches_total = 0
        #: Totals of what counting stages reported per batch (cache hits, ...), by stage then by count.
        self.counts: dict[str, dict[str, int]] = {}

    def record_request(self, timings_ms: Mapping[str, float]) -> None:
        """The timings of one request (``total`` among them)."""
        self.record_requests({}, {key: (value,) for key, value in timings_ms.items()})

    def record_requests(self, shared_ms: Mapping[str, float], each_ms: Mapping[str, Sequence[float]]) -> None:
        """The timings of the requests of one batch, at once: ``shared_ms`` alike for all of them (the
        stages ran once for the batch), ``each_ms`` one value per request (queue, total, ...).

        What :meth:`record_request` records for each of them, at a fraction of the cost per request.
        """
        count = len(each_ms["total"])
        if self.observer is not None:
            self.observer.requests_done(shared_ms, each_ms, count)
        self.requests_total += count
        self.latency_ms.extend(each_ms["total"])
        for key, values in each_ms.items():
            if key != "total":
                self._window(key).extend(values)
        for key, value in shared_ms.items():
            self._window(key).extend(value, count)

    def _window(self, key: str) -> RollingWindow:
        window = self.timings_ms.get(key)
        if window is None:
            window = self.timings_ms[key] = RollingWindow(self.window_s, clock=self._clock)
        return window

    def record_batch(self, rows: int) -> None:
        if self.observer is not None:
            self.observer.batch_dispatched(rows)
        self.batches_total += 1
        self.batch_sizes.add(rows)

    def record_batch_run(self, seconds: float) -> None:
        """How long a batch took from dispatch to results (the time it held a worker slot)."""
        if self.observer is not None:
            self.observer.batch_ran(seconds)
        self.batch_run_s.add(seconds)

    def record_counts(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """What the stages of one batch counted (``{stage: {count: n}}``), added to the totals."""
        if self.observer is not None:
            self.observer.stages_counted(counts)
        for stage, figures in counts.items():
            totals = self.counts.get(stage)
            if totals is None:
                totals = self.counts[stage] = {}
            for key, n in figures.items():
                totals[key] = totals.get(key, 0) + n

    def record_rejection(self) -> None:
        """A request refused at the door (queue full): counted apart from errors of requests that ran."""
        if self.observer is not None:
            self.observer.request_rejected()
        self.rejected_total += 1
        self.rejections.add(1.0)

    def record_error(self, requests: int = 1, status_code: int = 500) -> None:
        """``requests`` that failed with an error that maps to HTTP ``status_code``."""
        if self.observer is not None:
            self.observer.request_failed(status_code, requests)
        self._count_errors(requests)

    def record_expiry(self) -> None:
        """A request whose deadline passed before it ran: an error, told apart from those of requests that ran."""
        if self.observer is not None:
            self.observer.request_expired()
        self.expired_total += 1
        self._count_errors(1)

    def _count_errors(self, requests: int) -> None:
        self.errors_total += requests
        for _ in range(requests):
            self.errors.add(1.0)

    def snapshot(self, queue_depth: int = 0) -> dict[str, Any]:
        """Plain data for ``wb.stats()``: percentiles in ms, rates per second, the batch-size histogram."""
        sizes = self.batch_sizes.values().astype(int)
        return {
            "requests_total": self.requests_total,
            "errors_total": self.errors_total,
            "rejected_total": self.rejected_total,
            "expired_total": self.expired_total,
            "batches_total": self.batches_total,
            "counts": {stage: dict(figures) for stage, figures in self.counts.items()},
            "throughput_rps": self.latency_ms.rate(),
            "error_rate_rps": self.errors.rate(),
            "rejection_rate_rps": self.rejections.rate(),
            "queue_depth": queue_depth,
            "latency_ms": self.latency_ms.percentiles(),
            "timings_ms": {key: window.percentiles() for key, window in self.timings_ms.items()},
            "batch_run_ms": {key: value * 1e3 for key, value in self.batch_run_s.percentiles((50, 99, 100)).items()},
            "batch_size": {
                "mean": float(sizes.mean()) if sizes.size else float("nan"),
                "histogram": dict(sorted(Counter(sizes.tolist()).items())),
            },
        }

    def recent(self, last_s: float) -> dict[str, Any]:
        """What the last ``last_s`` seconds looked like (for decisions that must follow changes quickly).

        ``busy_s`` is the time batches held worker slots: divided by ``last_s``
        and by the slots available it is the utilisation of the workers.
        """
        if last_s <= 0:
            raise ValueError("last_s must be > 0")
        latency = self.latency_ms.values(last_s)
        return {
            "seconds": last_s,
            "requests": int(latency.size),
            "throughput_rps": latency.size / min(last_s, self.window_s),
            "latency_ms": self.latency_ms.percentiles(last_s=last_s),
            "busy_s": self.batch_run_s.total(last_s),
            "errors": len(self.errors.values(last_s)),
        }
