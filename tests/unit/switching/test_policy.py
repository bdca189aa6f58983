"""The switching decision, from scripted loads and profiles, on a clock the test moves."""

from __future__ import annotations

import math

import pytest

from workbench.switching import Candidate, Estimate, LatencyProfile, Load, SwitchingPolicy, SwitchingRules
from workbench.switching.policy import predict


def _profile(per_batch_ms: dict[int, float]) -> LatencyProfile:
    profile = LatencyProfile()
    for rows, ms in per_batch_ms.items():
        profile.add(rows, ms)
    return profile


FP32 = _profile({1: 10.0, 2: 16.0, 4: 28.0, 8: 52.0})  # at most 8 / 52 ms = 154 rows/s
INT8 = _profile({1: 4.0, 2: 6.0, 4: 10.0, 8: 18.0})    # at most 8 / 18 ms = 444 rows/s


def _candidates(rps: float, measured_fp32: float | None = None, measured_int8: float | None = None,
                quality: tuple[float | None, float | None] = (0.95, 0.93)) -> list[Candidate]:
    load = Load(rps, max_batch_size=8)
    return [Candidate("fp32", quality[0], "metadata", predict(FP32, load), measured_fp32),
            Candidate("int8", quality[1], "metadata", predict(INT8, load), measured_int8)]


def test_prediction_picks_the_batch_size_that_keeps_up_and_is_infinite_beyond_capacity() -> None:
    idle = predict(FP32, Load(0.0, max_batch_size=8))
    assert idle == Estimate(10.0, 1, 0.0, pytest.approx(8 / 0.052))
    busy = predict(FP32, Load(100.0, max_batch_size=8))
    # NOTE: batch 1 would be fully busy; batch 2 is 80% busy (16 ms * 1.8), better than batch 4 (28 ms * 1.7).
    assert busy.batch_size == 2 and busy.utilisation == pytest.approx(0.8) and busy.p99_ms == pytest.approx(28.8)
    over = predict(FP32, Load(200.0, max_batch_size=8))
    assert math.isinf(over.p99_ms) and over.batch_size is None and over.capacity_rps == pytest.approx(153.8, 0.01)
    assert math.isinf(predict(LatencyProfile(), Load(1.0, 8)).p99_ms), "never profiled: no promise"


def test_surge_moves_to_the_faster_variant_and_back_after_it_with_hysteresis() -> None:
    policy = SwitchingPolicy(SwitchingRules(target_p99_ms=40, margin=0.2, dwell_s=10, confirm_s=2))
    quiet = policy.decide(_candidates(20), "fp32", 20, now_s=0)
    assert quiet.action == "stay" and quiet.chosen == "fp32" and "meets the target of 40.0 ms" in quiet.reason

    first = policy.decide(_candidates(200), "fp32", 200, now_s=1)
    assert (first.action, first.chosen) == ("wait", "int8") and "confirming" in first.reason
    switch = policy.decide(_candidates(200), "fp32", 200, now_s=3)
    assert (switch.action, switch.chosen) == ("switch", "int8")
    assert "fp32 is over the target at 200 rows/s: p99 ~inf (cannot keep up) > 40.0 ms" in switch.reason
    policy.switched(3)

    # The load falls: fp32 would meet the target with the margin; the move is confirmed, then the dwell holds it.
    back = policy.decide(_candidates(20, measured_int8=5), "int8", 20, now_s=6)
    assert (back.action, back.chosen) == ("wait", "fp32") and "confirming for 2 s" in back.reason
    back = policy.decide(_candidates(20, measured_int8=5), "int8", 20, now_s=9)
    assert (back.action, back.chosen) == ("wait", "fp32")
    assert "last switch was 6.0 s ago (dwell 10 s)" in back.reason
    back = policy.decide(_candidates(20, measured_int8=5), "int8", 20, now_s=13)
    assert (back.action, back.chosen) == ("switch", "fp32") and "ranks above int8" in back.reason


def test_the_margin_keeps_a_borderline_variant_from_flapping() -> None:
    policy = SwitchingPolicy(SwitchingRules(target_p99_ms=40, margin=0.2, dwell_s=0, confirm_s=0))
    # fp32 predicted at 35 ms: within the target, so it stays while active ...
    stays = policy.decide(_candidates(20, measured_fp32=35), "fp32", 20, now_s=0)
    assert stays.action == "stay"
    # ... but from int8, 35 ms is not below 40 * 0.8 = 32 ms: no move up.
    candidates = [Candidate("fp32", 0.95, "metadata", Estimate(35.0, 1, 0.1, 100.0)),
                  Candidate("int8", 0.93, "metadata", Estimate(5.0, 1, 0.1, 300.0), 5.0)]
    held = policy.decide(candidates, "int8", 20, now_s=1)
    assert held.action == "stay" and "fp32 would be ~35.0 ms (a move needs <= 32.0 ms)" in held.reason


def test_a_measured_p99_over_the_target_counts_against_the_active_variant() -> None:
    policy = SwitchingPolicy(SwitchingRules(target_p99_ms=40, dwell_s=0, confirm_s=0))
    decision = policy.decide(_candidates(20, measured_fp32=70), "fp32", 20, now_s=0)
    assert (decision.action, decision.chosen) == ("switch", "int8") and "p99 ~70.0 ms > 40.0 ms" in decision.reason


def test_when_nothing_meets_the_target_the_fastest_serves() -> None:
    policy = SwitchingPolicy(SwitchingRules(target_p99_ms=2, dwell_s=0, confirm_s=0))
    decision = policy.decide(_candidates(20), "fp32", 20, now_s=0)
    assert (decision.action, decision.chosen) == ("switch", "int8")
    assert decision.reason.startswith("no variant meets p99 <= 2.0 ms at 20 rows/s; int8 is the fastest")


def test_equal_quality_goes_to_the_variant_listed_first_and_unknown_quality_ranks_last() -> None:
    policy = SwitchingPolicy(SwitchingRules(target_p99_ms=40, dwell_s=0, confirm_s=0))
    assert policy.decide(_candidates(20, quality=(1.0, 1.0)), "int8", 20, now_s=0).chosen == "fp32"
    assert policy.decide(_candidates(20, quality=(None, 0.5)), "fp32", 20, now_s=1).chosen == "int8"


@pytest.mark.parametrize("bad, message", [
    ({"target_p99_ms": 0}, "target_p99_ms must be"), ({"target_p99_ms": 10, "margin": 1}, "margin must be"),
    ({"target_p99_ms": 10, "dwell_s": -1}, "dwell_s and confirm_s"),
    ({"target_p99_ms": 10, "min_labels": 0}, "min_labels must be"),
])
def test_rules_are_checked_when_set(bad: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SwitchingRules(**bad)
