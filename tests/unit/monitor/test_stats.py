"""Rolling windows: percentiles and rates over the recent past only."""

from __future__ import annotations

import numpy as np
from waiting import ManualClock

from workbench.monitor import BatcherStats, RollingWindow


def test_percentiles_match_numpy_and_old_samples_expire() -> None:
    clock = ManualClock()
    window = RollingWindow(window_s=10, clock=clock)
    values = np.arange(1, 101, dtype=float)
    for v in values:
        window.add(v)
    assert window.percentiles() == {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}
    clock.now = 11
    window.add(7.0)
    assert len(window) == 1 and window.percentiles()["p99"] == 7.0


def test_rate_counts_per_second() -> None:
    clock = ManualClock()
    window = RollingWindow(window_s=10, clock=clock)
    for i in range(50):
        clock.now = i * 0.1
        window.add(1.0)
    clock.now = 5.0
    assert window.rate() == 50 / 5.0
    assert np.isnan(RollingWindow().percentiles()["p50"])


def test_batcher_stats_snapshot() -> None:
    stats = BatcherStats()
    for size in (1, 4, 4):
        stats.record_batch(size)
    stats.record_request({"queue": 1.0, "model": 2.0, "total": 3.5})
    stats.record_error(2)
    snap = stats.snapshot(queue_depth=3)
    assert snap["batch_size"]["histogram"] == {1: 1, 4: 2}
    assert snap["batch_size"]["mean"] == 3.0
    assert snap["latency_ms"]["p50"] == 3.5 and snap["timings_ms"]["model"]["p50"] == 2.0
    assert (snap["errors_total"], snap["queue_depth"], snap["requests_total"]) == (2, 3, 1)
