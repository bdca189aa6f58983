"""Latency profiles by batch size, and served batches recovered from the requests they answered."""

from __future__ import annotations

import math

import pytest

from workbench.switching import BatchGrouper, LatencyProfile


def test_profile_answers_measured_interpolated_and_larger_batch_sizes() -> None:
    profile = LatencyProfile(samples_per_size=3)
    assert math.isnan(profile.run_ms(1)) and not profile
    for ms in (9.0, 4.0, 5.0, 6.0):  # NOTE: three kept: the 9 ms run has left
        profile.add(1, ms)
    profile.add(4, 11.0)
    assert profile.sizes() == [1, 4] and profile.batches == 5
    assert profile.run_ms(1) == 5.0 and profile.run_ms(1, 1.0) == 6.0
    assert profile.run_ms(2) == pytest.approx(5.0 + 6.0 / 3)
    assert profile.run_ms(8) == pytest.approx(22.0), "beyond the largest measured: its cost per row"
    assert profile.snapshot()[4] == {"batches": 1, "p50_ms": 11.0, "p99_ms": 11.0}


def test_profile_ignores_impossible_samples() -> None:
    profile = LatencyProfile()
    profile.add(0, 3.0)
    profile.add(2, float("nan"))
    profile.add(2, -1.0)
    assert not profile and profile.batches == 0


def _timings(queue: float, stage_ms: float, run_ms: float) -> dict[str, float]:
    return {"queue": queue, "batch_formation": 0.5, "tokenize": 0.1, "encoder": stage_ms,
            "total": queue + 0.5 + run_ms}


def test_grouper_recovers_each_batch_once_it_is_complete() -> None:
    grouper = BatchGrouper()
    # NOTE: two batches answered together, their requests interleaved; each request has its own queue time.
    grouper.add("fp32", 1, _timings(1.0, 7.0, 8.0))
    grouper.add("int8", 2, _timings(0.2, 3.0, 4.0))
    grouper.add("fp32", 3, _timings(2.0, 7.0, 8.0))
    assert list(grouper.drain()) == [], "a batch may still have answers to come until the next drain"
    grouper.add("fp32", 1, _timings(3.0, 7.0, 8.0))
    batches = sorted(grouper.drain())
    assert [(v, rows) for v, rows, _ in batches] == [("fp32", 5), ("int8", 2)]
    assert [run for _, _, run in batches] == [pytest.approx(8.0), pytest.approx(4.0)]
    assert list(grouper.drain()) == []


def test_grouper_skips_requests_without_batch_timings() -> None:
    grouper = BatchGrouper()
    grouper.add("fp32", 1, {"total": 3.0})
    list(grouper.drain())
    assert list(grouper.drain()) == []
