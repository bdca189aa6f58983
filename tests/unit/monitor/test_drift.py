"""Drift scores: PSI as computed by hand, no alert on samples of the reference's distribution, alerts on shifts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.monitor import Metrics
from workbench.monitor.drift import DriftCollector, DriftMonitor, DriftThresholds, ks_2samp, psi


def test_psi_matches_a_hand_computation() -> None:
    reference, live = np.array([40, 40, 20]), np.array([20, 30, 50])
    by_hand = ((0.2 - 0.4) * math.log(0.2 / 0.4) + (0.3 - 0.4) * math.log(0.3 / 0.4)
               + (0.5 - 0.2) * math.log(0.5 / 0.2))
    assert psi(reference, live) == pytest.approx(by_hand)
    assert psi(reference, reference * 3) == pytest.approx(0.0)
    assert psi(np.array([1, 0]), np.array([1, 0])) == pytest.approx(0.0)  # empty bins floored, not infinite


def test_psi_rejects_bins_that_do_not_match() -> None:
    with pytest.raises(ValueError, match="same bins"):
        psi(np.array([1, 2]), np.array([1, 2, 3]))


def test_thresholds_are_checked_and_levelled() -> None:
    with pytest.raises(ValueError, match="warn_psi <= alert_psi"):
        DriftThresholds(warn_psi=0.3, alert_psi=0.2)
    levels = DriftThresholds()
    assert [levels.level(s) for s in (0.05, 0.1, 0.3, float("nan"))] == ["ok", "warn", "alert", "ok"]


def test_ks_separates_shifted_samples_only() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=2000)
    assert ks_2samp(a, rng.normal(size=2000))[1] > 0.01
    statistic, pvalue = ks_2samp(a, rng.normal(0.5, size=2000))
    assert statistic > 0.1 and pvalue < 1e-6


def _monitor(rng: np.random.Generator, **kwargs: object) -> DriftMonitor:
    reference = {"x": rng.normal(size=(5000, 3)), "color": rng.choice(["red", "green", "blue"], 5000, p=[.5, .3, .2]),
                 "text": np.array([" ".join(["w"] * n) for n in rng.integers(2, 40, 5000)], dtype=object)}
    return DriftMonitor(reference, {"label": rng.choice(["a", "b"], 5000)}, **kwargs)  # type: ignore[arg-type]


def _rows(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"x": rng.normal(size=(n, 3)), "color": rng.choice(["red", "green", "blue"], n, p=[.5, .3, .2]),
            "text": np.array([" ".join(["w"] * k) for k in rng.integers(2, 40, n)], dtype=object)}


def test_samples_of_the_same_distribution_stay_under_warn() -> None:
    rng = np.random.default_rng(0)
    monitor = _monitor(rng)
    kinds = {name: entry["kind"] for name, entry in monitor.report()["features"].items()}
    assert kinds == {"x[0]": "numeric", "x[1]": "numeric", "x[2]": "numeric", "color": "categorical",
                     "text": "text_length"}
    for _ in range(40):
        monitor.record(_rows(rng, 50), {"label": rng.choice(["a", "b"], 50)})
    report = monitor.report()
    assert report["level"] == "ok", report["worst"]
    assert report["alerts"] == [] and report["warnings"] == []
    assert max(entry["psi"] for entry in report["features"].values()) < 0.1
    assert report["prediction_psi"] < 0.1


def test_a_shifted_feature_alerts_and_is_named() -> None:
    rng = np.random.default_rng(1)
    monitor = _monitor(rng)
    for _ in range(20):
        rows = _rows(rng, 50)
        rows["x"][:, 2] = rows["x"][:, 2] * 2 + 1
        rows["color"] = rng.choice(["red", "green", "blue", "purple"], 50, p=[.2, .2, .2, .4])
        monitor.record(rows, {"label": np.full(50, "a")})
    report = monitor.report()
    assert report["level"] == "alert"
    assert set(report["alerts"]) == {"x[2]", "color"}
    assert report["worst"][0]["feature"] in {"x[2]", "color"}
    assert report["features"]["x[2]"]["ks_pvalue"] < 1e-6
    assert report["prediction_level"] == "alert" and report["prediction"]["label"]["psi"] > 0.25


def test_the_live_window_is_bounded_and_waits_for_enough_rows() -> None:
    rng = np.random.default_rng(2)
    monitor = _monitor(rng, window_rows=200, min_rows=100)
    monitor.record(_rows(rng, 40), {})
    assert monitor.report()["level"] == "collecting"
    for _ in range(20):
        monitor.record(_rows(rng, 40), {})
    assert 200 <= monitor.report()["live_rows"] < 240
    shifted = _rows(rng, 240)
    shifted["x"] += 5
    monitor.record(shifted, {})
    assert monitor.report()["live_rows"] == 240  # the older rows left the window
    assert monitor.report()["features"]["x[0]"]["psi"] > 1


def test_the_live_window_forgets_rows_older_than_window_s() -> None:
    now = [0.0]
    monitor = DriftMonitor({"x": np.arange(1000.0)}, window_s=10, min_rows=1, clock=lambda: now[0])
    monitor.record({"x": np.arange(1000.0, 1100.0)}, {})
    assert monitor.report()["level"] == "alert"
    now[0] = 20.0
    monitor.record({"x": np.arange(0.0, 1000.0, 10.0)}, {})
    report = monitor.report()
    assert report["live_rows"] == 100 and report["level"] == "ok"


def test_the_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match="window_rows"):
        DriftMonitor({"x": np.zeros(10)}, window_rows=0)
    with pytest.raises(ValueError, match="min_rows"):
        DriftMonitor({"x": np.zeros(10)}, window_rows=10, min_rows=20)


def test_the_gauges_name_the_pipeline_and_feature() -> None:
    metrics = Metrics()
    monitor = DriftMonitor({"x": np.arange(1000.0)}, {"label": np.array(["a", "b"] * 500)}, min_rows=1)
    monitor.record({"x": np.arange(1000.0, 1100.0)}, {"label": np.full(100, "a")})
    metrics.register(DriftCollector(lambda: {"tabular": monitor}))
    text = metrics.text()
    assert 'workbench_drift_psi{feature="x",pipeline="tabular",source="input"}' in text
    assert 'workbench_drift_psi{feature="label",pipeline="tabular",source="prediction"}' in text
    assert 'workbench_drift_alert_level{pipeline="tabular"} 2.0' in text
    assert 'workbench_drift_live_rows{pipeline="tabular"} 100.0' in text


def test_numeric_outputs_are_scored_when_named() -> None:
    rng = np.random.default_rng(4)
    predictions = {"label": rng.choice(["a", "b"], 2000), "probability": rng.uniform(0.5, 1.0, 2000)}
    assert list(DriftMonitor({"x": rng.normal(size=2000)}, predictions).report()["prediction"]) == ["label"]
    monitor = DriftMonitor({"x": rng.normal(size=2000)}, predictions, prediction_outputs=["probability"])
    monitor.record({"x": rng.normal(size=200)}, {"probability": rng.uniform(0.9, 1.0, 200)})
    assert monitor.report()["prediction"]["probability"]["level"] == "alert"
    with pytest.raises(ValueError, match="not among the predictions"):
        DriftMonitor({"x": np.zeros(10)}, predictions, prediction_outputs=["score"])
