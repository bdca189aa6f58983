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


def test_extend_keeps_what_adding_one_by_one_keeps_across_the_ring() -> None:
    clock = ManualClock()
    one_by_one = RollingWindow(window_s=10, max_samples=7, clock=clock)
    at_once = RollingWindow(window_s=10, max_samples=7, clock=clock)
    # NOTE: blocks of one (a batch of one request) take the scalar path, as a list and as a count.
    for index, block in enumerate(([1.0, 2.0, 3.0], [4.0] * 5, list(np.arange(10.0, 22.0)), [5.0], [6.0], [7.0])):
        for v in block:
            one_by_one.add(v)
        if len(block) == 1 and index % 2:
            at_once.extend(block)
        elif len(set(block)) == 1:
            at_once.extend(block[0], len(block))
        else:
            at_once.extend(block)
        np.testing.assert_array_equal(at_once.values(), one_by_one.values())


def test_a_batch_recorded_at_once_equals_its_requests_recorded_one_by_one() -> None:
    from workbench.monitor.metrics import Metrics

    shared = {"tokenize": 0.4, "encoder": 12.0, "transfer": 1.5}
    each = {"queue": [0.1, 2.0, 7.5], "batch_formation": [0.3, 0.2, 0.0], "total": [14.0, 16.0, 21.0]}
    metrics = Metrics()
    by_request = BatcherStats(observer=metrics.observer("a"))
    for i in range(3):
        by_request.record_request({"queue": each["queue"][i], "batch_formation": each["batch_formation"][i],
                                   **shared, "total": each["total"][i]})
    by_batch = BatcherStats(observer=metrics.observer("b"))
    by_batch.record_requests(shared, each)
    first, second = by_request.snapshot(0), by_batch.snapshot(0)
    for key in ("requests_total", "latency_ms", "timings_ms"):
        assert first[key] == second[key], key
    a, b = metrics.observer("a"), metrics.observer("b")
    assert a.completed == b.completed == 3
    assert {k: (v.counts, round(v.sum, 12)) for k, v in a.durations.items()} == {
        k: (v.counts, round(v.sum, 12)) for k, v in b.durations.items()}
