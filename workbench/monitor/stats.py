"""Rolling statistics: percentiles, rates and histograms over a recent time window."""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["BatcherStats", "RollingWindow"]


class RollingWindow:
    """Samples of the last ``window_s`` seconds (at most ``max_samples`` of them).

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
        self.window_s = window_s
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, value: float) -> None:
        self._samples.append((self._clock(), value))

    def _trim(self) -> None:
        horizon = self._clock() - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    def values(self, last_s: float | None = None) -> np.ndarray:
        """The samples in the window, or only those of the last ``last_s`` seconds."""
        self._trim()
        if last_s is None:
            return np.fromiter((v for _, v in self._samples), dtype=np.float64, count=len(self._samples))
        horizon = self._clock() - last_s
        # NOTE: samples are in time order, so the recent ones are read from the right end only.
        recent = list(itertools.takewhile(lambda sample: sample[0] >= horizon, reversed(self._samples)))
        return np.fromiter((v for _, v in reversed(recent)), dtype=np.float64, count=len(recent))

    def __len__(self) -> int:
        self._trim()
        return len(self._samples)

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
        self._trim()
        if not self._samples:
            return 0.0
        if last_s is not None:
            return self.values(last_s).size / min(last_s, self.window_s)
        span = min(self.window_s, max(self._clock() - self._samples[0][0], 1e-3))
        return len(self._samples) / span

    def total(self, last_s: float | None = None) -> float:
        """The sum of the samples in the window (or in its last ``last_s`` seconds)."""
        return float(self.values(last_s).sum())


class BatcherStats:
    """What a batcher has done recently: per-request timings, batch sizes, errors.

    Parameters
    ----------
    window_s
        How far back percentiles and rates look.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self.latency_ms = RollingWindow(window_s, clock=clock)
        self.batch_sizes = RollingWindow(window_s, clock=clock)
        self.errors = RollingWindow(window_s, clock=clock)
        self.rejections = RollingWindow(window_s, clock=clock)
        self.batch_run_s = RollingWindow(window_s, clock=clock)
        self.timings_ms: dict[str, RollingWindow] = {}
        self.requests_total = 0
        self.errors_total = 0
        self.rejected_total = 0
        self.batches_total = 0

    def record_request(self, timings_ms: Mapping[str, float]) -> None:
        self.requests_total += 1
        self.latency_ms.add(timings_ms["total"])
        for key, value in timings_ms.items():
            if key == "total":
                continue
            window = self.timings_ms.get(key)
            if window is None:
                window = self.timings_ms[key] = RollingWindow(self.window_s, clock=self._clock)
            window.add(value)

    def record_batch(self, rows: int) -> None:
        self.batches_total += 1
        self.batch_sizes.add(rows)

    def record_batch_run(self, seconds: float) -> None:
        """How long a batch took from dispatch to results (the time it held a worker slot)."""
        self.batch_run_s.add(seconds)

    def record_rejection(self) -> None:
        """A request refused at the door (queue full): counted apart from errors of requests that ran."""
        self.rejected_total += 1
        self.rejections.add(1.0)

    def record_error(self, requests: int = 1) -> None:
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
            "batches_total": self.batches_total,
            "throughput_rps": self.latency_ms.rate(),
            "error_rate_rps": self.errors.rate(),
            "rejection_rate_rps": self.rejections.rate(),
            "queue_depth": queue_depth,
            "latency_ms": self.latency_ms.percentiles(),
            "timings_ms": {key: window.percentiles() for key, window in self.timings_ms.items()},
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
