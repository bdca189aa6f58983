"""Figures over the last few seconds of a rolling window (what autoscaling reads)."""

from __future__ import annotations

import numpy as np
import pytest
from waiting import ManualClock

from workbench.monitor import BatcherStats, RollingWindow


def test_last_seconds_of_a_window() -> None:
    clock = ManualClock()
    window = RollingWindow(window_s=60, clock=clock)
    for second in range(10):
        clock.now = float(second)
        window.add(100.0 + second)
    clock.now = 9.5
    assert window.values(last_s=2.0).tolist() == [108.0, 109.0]
    assert window.percentiles(last_s=2.0)["p50"] == 108.5
    assert window.rate(last_s=2.0) == 1.0
    assert window.total(last_s=3.0) == 107.0 + 108.0 + 109.0
    assert np.isnan(window.percentiles(last_s=0.1)["p99"])
    # NOTE: without last_s, the whole window, as before.
    assert len(window.values()) == 10 and window.percentiles()["p50"] == 104.5


def test_batcher_stats_recent() -> None:
    clock = ManualClock()
    stats = BatcherStats(clock=clock)
    stats.record_request({"total": 50.0})
    stats.record_batch_run(0.5)
    clock.now = 10.0
    for ms in (1.0, 2.0, 3.0):
        stats.record_request({"total": ms})
    stats.record_batch_run(0.25)
    stats.record_batch_run(0.25)
    recent = stats.recent(2.0)
    assert recent["requests"] == 3 and recent["busy_s"] == 0.5
    assert recent["latency_ms"]["p50"] == 2.0 and recent["throughput_rps"] == 1.5
    assert stats.snapshot()["requests_total"] == 4
    with pytest.raises(ValueError):
        stats.recent(0)
