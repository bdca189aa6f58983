"""Business metrics: counts and shares per variant and window, the z-test by hand, no flag on small samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from waiting import ManualClock

from workbench.monitor import Metrics
from workbench.monitor.business import BusinessCollector, BusinessMonitor, ShiftRule, two_proportion_z
from workbench.pipeline.graph import Prediction
from workbench.pipeline.signals import BusinessSignal

RISK = BusinessSignal("risk", "risk_bucket")
APPROVED = BusinessSignal("approved", "score", above=0.5)
GBT = {"model": "gbt"}


def buckets(low: int, high: int) -> np.ndarray:
    return np.array(["low"] * low + ["high"] * high, dtype=object)


def monitor(clock: ManualClock, **kwargs: object) -> BusinessMonitor:
    return BusinessMonitor([RISK, APPROVED], clock=clock, **kwargs)  # type: ignore[arg-type]


def test_the_z_statistic_matches_a_hand_computation() -> None:
    pooled = (30 + 20) / (100 + 200)
    by_hand = (30 / 100 - 20 / 200) / math.sqrt(pooled * (1 - pooled) * (1 / 100 + 1 / 200))
    assert two_proportion_z(30, 100, 20, 200) == pytest.approx(by_hand)
    assert two_proportion_z(0, 100, 0, 100) == 0.0  # nothing moved: no division by zero
    assert two_proportion_z(5, 0, 5, 10) == 0.0


def test_counts_and_shares_per_window_and_variant() -> None:
    clock = ManualClock()
    watcher = monitor(clock)
    watcher.record({"risk_bucket": buckets(8, 2), "score": np.array([0.9] * 7 + [0.1] * 3)}, GBT)
    clock.now = 100.0  # the first request is now in the baseline
    watcher.record({"risk_bucket": buckets(1, 3), "score": np.array([0.2, 0.6, 0.7, 0.5])}, GBT)
    watcher.record({"risk_bucket": buckets(2, 0), "score": np.array([0.8, 0.8])}, {"model": "logreg"})
    report = watcher.report()
    gbt = report["variants"]["gbt"]
    assert (gbt["rows"], gbt["baseline_rows"]) == (4, 10)
    risk = gbt["signals"]["risk"]
    assert risk["counts"] == {"high": 3, "low": 1}
    assert risk["rates"] == {"high": 0.75, "low": 0.25}
    assert risk["baseline_rates"] == {"high": 0.2, "low": 0.8}
    approved = gbt["signals"]["approved"]
    assert approved["counts"] == {"above": 2, "below": 2}  # 0.5 is not above 0.5
    assert approved["baseline_rates"] == {"above": 0.7, "below": pytest.approx(0.3)}
    assert report["variants"]["logreg"]["signals"]["risk"]["counts"] == {"low": 2}
    assert report["variants"]["logreg"]["baseline_rows"] == 0
    # NOTE: too few rows on either side to test anything: collecting, whatever the shares say.
    assert risk["status"] == "collecting" and not report["shift"]


def test_a_sudden_shift_is_flagged_and_a_steady_mix_is_not() -> None:
    clock = ManualClock()
    watcher = monitor(clock)
    rng = np.random.default_rng(1)
    for second in range(0, 600, 2):
        clock.now = float(second)
        watcher.record({"risk_bucket": np.where(rng.random(10) < 0.2, "high", "low"), "score": rng.random(10)}, GBT)
    steady = watcher.report()
    assert steady["variants"]["gbt"]["signals"]["risk"]["status"] == "ok"
    assert steady["shift"] is False and steady["shifts"] == []
    for second in range(600, 660, 2):
        clock.now = float(second)
        watcher.record({"risk_bucket": np.where(rng.random(10) < 0.5, "high", "low"), "score": rng.random(10)}, GBT)
    shifted = watcher.report()
    risk = shifted["variants"]["gbt"]["signals"]["risk"]
    assert risk["status"] == "shift" and set(risk["shifted"]) == {"high", "low"}
    assert risk["tests"]["high"]["z"] >= 4 and risk["tests"]["high"]["change"] > 0.2
    assert shifted["variants"]["gbt"]["signals"]["approved"]["status"] == "ok"
    assert {(s["signal"], s["value"]) for s in shifted["shifts"]} == {("risk", "high"), ("risk", "low")}


def test_a_shift_on_a_small_sample_raises_no_flag() -> None:
    clock = ManualClock()
    watcher = monitor(clock, rule=ShiftRule(min_count=100))
    clock.now = 10.0
    watcher.record({"risk_bucket": buckets(500, 0), "score": np.zeros(500)}, GBT)
    clock.now = 100.0
    watcher.record({"risk_bucket": buckets(0, 40), "score": np.zeros(40)}, GBT)
    risk = watcher.report()["variants"]["gbt"]["signals"]["risk"]
    assert risk["tests"]["high"]["z"] > 10  # significant, but on 40 rows only
    assert risk["status"] == "collecting" and risk["shifted"] == []


def test_a_tiny_significant_move_is_not_a_shift() -> None:
    def risk_after(min_change: float) -> dict[str, object]:
        clock = ManualClock()
        watcher = monitor(clock, rule=ShiftRule(z=4.0, min_change=min_change, min_count=100))
        watcher.record({"risk_bucket": buckets(180_000, 20_000), "score": np.zeros(200_000)}, GBT)
        clock.now = 100.0
        watcher.record({"risk_bucket": buckets(176_000, 24_000), "score": np.zeros(200_000)}, GBT)
        risk: dict[str, object] = watcher.report()["variants"]["gbt"]["signals"]["risk"]
        return risk

    heavy = risk_after(0.05)
    assert heavy["tests"] == {"high": {"z": pytest.approx(20.2, abs=0.1), "change": 0.02},  # type: ignore[index]
                              "low": {"z": pytest.approx(-20.2, abs=0.1), "change": -0.02}}
    assert heavy["status"] == "ok" and heavy["shifted"] == []
    assert risk_after(0.01)["shifted"] == ["high", "low"]


def test_rows_older_than_the_baseline_are_forgotten() -> None:
    clock = ManualClock()
    watcher = monitor(clock, window_s=10.0, baseline_windows=2)
    watcher.record({"risk_bucket": buckets(5, 5), "score": np.zeros(10)}, GBT)
    clock.now = 15.0
    assert watcher.report()["variants"]["gbt"]["baseline_rows"] == 10
    clock.now = 31.0
    assert watcher.report()["variants"] == {}


def test_only_the_values_declared_are_tested() -> None:
    clock = ManualClock()
    watcher = BusinessMonitor([BusinessSignal("risk", "risk_bucket", values=("high",))], clock=clock)
    watcher.record({"risk_bucket": buckets(200, 0)}, GBT)
    clock.now = 100.0
    watcher.record({"risk_bucket": buckets(100, 100)}, GBT)
    risk = watcher.report()["variants"]["gbt"]["signals"]["risk"]
    assert list(risk["tests"]) == ["high"] and risk["shifted"] == ["high"]


def test_observe_counts_a_prediction_under_its_variant_or_the_deployment_s() -> None:
    clock = ManualClock()
    watcher = BusinessMonitor([RISK], clock=clock, variants=lambda: {"model": "logreg"})
    watcher.observe({}, Prediction({"risk_bucket": buckets(1, 1)}, variants={"model": "gbt"}))
    watcher.observe({}, Prediction({"risk_bucket": buckets(0, 3)}))
    variants = watcher.report()["variants"]
    assert variants["gbt"]["signals"]["risk"]["counts"] == {"high": 1, "low": 1}
    assert variants["logreg"]["signals"]["risk"]["counts"] == {"high": 3}


def test_the_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one signal"):
        BusinessMonitor([])
    with pytest.raises(ValueError, match="window_s"):
        BusinessMonitor([RISK], window_s=0)
    with pytest.raises(ValueError, match="baseline_windows"):
        BusinessMonitor([RISK], baseline_windows=0)
    with pytest.raises(ValueError, match="min_count"):
        ShiftRule(min_count=0)
    with pytest.raises(ValueError, match="min_change"):
        ShiftRule(min_change=1.5)


def test_the_collector_exports_rates_and_the_flag() -> None:
    clock = ManualClock()
    watcher = monitor(clock, rule=ShiftRule(min_count=10))
    watcher.record({"risk_bucket": buckets(90, 10), "score": np.zeros(100)}, GBT)
    clock.now = 100.0
    watcher.record({"risk_bucket": buckets(20, 80), "score": np.zeros(100)}, GBT)
    metrics = Metrics()
    metrics.register(BusinessCollector(lambda: {"tabular": watcher}))
    text = metrics.text()
    assert ('workbench_business_rate{pipeline="tabular",signal="risk",value="high",variant="gbt",window="current"} 0.8'
            in text)
    assert ('workbench_business_rate{pipeline="tabular",signal="risk",value="high",variant="gbt",window="baseline"} 0.1'
            in text)
    assert 'workbench_business_count{pipeline="tabular",signal="risk",value="high",variant="gbt"} 80.0' in text
    assert 'workbench_business_shift{pipeline="tabular",signal="risk",variant="gbt"} 1.0' in text
    assert 'workbench_business_shift{pipeline="tabular",signal="approved",variant="gbt"} 0.0' in text
    assert 'workbench_business_rows{pipeline="tabular",variant="gbt",window="baseline"} 100.0' in text


def test_one_row_requests_count_as_many_row_ones_even_when_nobody_reads_for_long() -> None:
    clock = ManualClock()
    rows, scores = np.where(np.arange(5000) % 4 == 0, "high", "low"), np.linspace(0, 1, 5000)
    one_by_one, at_once = monitor(clock), monitor(clock)
    for row, score in zip(rows, scores):  # NOTE: more than COUNT_AT: the monitor counts some on its own
        one_by_one.record({"risk_bucket": np.array([row]), "score": np.array([score])}, GBT)
    at_once.record({"risk_bucket": rows, "score": scores}, GBT)
    assert one_by_one.report()["variants"] == at_once.report()["variants"]
    assert one_by_one.report()["variants"]["gbt"]["signals"]["risk"]["counts"] == {"high": 1250, "low": 3750}
