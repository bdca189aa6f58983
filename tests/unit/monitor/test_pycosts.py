"""Python's own costs: GC pauses per window, GIL contention, the mitigations and their metrics."""

from __future__ import annotations

import gc
import time
from typing import Any

import pytest
from waiting import ManualClock

from workbench.monitor import Metrics
from workbench.monitor.pycosts import CachedFetch, GcPauses, GilSampler, PythonCostsCollector, mitigate, process_costs


def test_pauses_are_counted_per_generation_and_leave_the_window() -> None:
    clock = ManualClock()
    pauses = GcPauses(window_s=10, clock=clock)
    pauses.install()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.uninstall()
    snapshot = pauses.snapshot()
    assert snapshot["by_generation"]["0"]["count"] >= 1 and snapshot["by_generation"]["2"]["count"] >= 1
    assert snapshot["count"] == sum(g["count"] for g in snapshot["by_generation"].values())
    assert 0 < snapshot["longest_ms"] <= snapshot["total_ms"]
    clock.now = 11
    later = pauses.snapshot()
    assert later["count"] == 0 and later["longest_ms"] == 0
    assert later["collections_total"] == snapshot["collections_total"]  # the counters only grow


def test_uninstalled_recorder_hears_nothing() -> None:
    pauses = GcPauses()
    pauses.install()
    pauses.install()  # once only
    assert gc.callbacks.count(pauses._callback) == 1
    pauses.uninstall()
    gc.collect()
    assert pauses.snapshot()["count"] == 0


def test_the_sampler_sees_a_thread_holding_the_gil() -> None:
    sampler = GilSampler(interval_s=0.002, window_s=30)
    sampler.start()
    try:
        time.sleep(0.2)
        idle = sampler.snapshot()["contention"]
        end = time.perf_counter() + 0.4
        while time.perf_counter() < end:  # pure Python: holds the GIL between switch intervals
            sum(range(200))
        busy = sampler.snapshot()["contention"]
    finally:
        sampler.stop()
    assert busy > idle and busy > 0.05


def test_mitigations_raise_the_threshold_and_freeze() -> None:
    before = gc.get_threshold()
    try:
        applied = mitigate(freeze=True, threshold0=12_345)
        assert applied["thresholds"][0] == 12_345 and applied["frozen_objects"] > 0
        with pytest.raises(ValueError, match="threshold0 must be an integer >= 1"):
            mitigate(freeze=False, threshold0=0)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_process_recorder_is_installed_once() -> None:
    assert process_costs() is process_costs()
    assert process_costs().gc.installed


async def test_cached_fetch_refreshes_in_the_background_at_most_every_interval() -> None:
    calls = []

    async def fetch() -> dict[str, Any]:
        calls.append(1)
        return {"w": len(calls)}

    cached = CachedFetch(fetch, every_s=60)
    assert cached.get() == {}
    await asyncio_sleep()
    assert cached.get() == {"w": 1}
    await asyncio_sleep()
    assert len(calls) == 1


async def asyncio_sleep() -> None:
    import asyncio

    await asyncio.sleep(0.01)


def test_metrics_expose_serving_and_worker_figures() -> None:
    metrics = Metrics()
    snapshot = process_costs().snapshot()
    metrics.register(PythonCostsCollector(lambda: {"serving": snapshot, "workers": {"tcp://w:1": snapshot}}))
    text = metrics.text()
    assert 'workbench_python_gc_collections_total{generation="0",process="serving"}' in text
    assert 'workbench_python_gc_longest_pause_seconds{process="tcp://w:1"}' in text
    assert 'workbench_python_gil_contention_ratio{process="serving"}' in text


def test_the_dashboard_line_names_each_process() -> None:
    from workbench.ui.stages import python_line

    snapshot = process_costs().snapshot()
    line = python_line({"serving": snapshot, "workers": {"tcp://w:1": snapshot}})
    assert "**serving**: GC" in line and "**tcp://w:1**" in line and "GIL" in line
    assert python_line(None) == ""
