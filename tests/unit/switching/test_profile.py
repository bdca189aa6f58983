"""Latency profiles by batch size, and served batches recovered from the requests they answered."""

from __future__ import annotations

import math

import pytest

from workbench.switching import LatencyProfile


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
