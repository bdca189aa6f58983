"""The monitoring panels: drift, live quality and business metrics of a served pipeline, from the one stats sample.

An in-process Workbench serves the tabular demo with its training rows as the drift
reference and a prediction log of the test's own; shifted rows are sent, labels posted,
and each panel must show the values the engine reports. Refreshes are made by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from waiting import ManualClock

from workbench.api import Workbench
from workbench.demo import demo_pipeline
from workbench.demo.tabular import TabularData, load_tabular_data
from workbench.monitor.business import BusinessMonitor, ShiftRule
from workbench.monitor.drift import DriftMonitor
from workbench.pipeline import Pipeline
from workbench.pipeline.signals import BusinessSignal
from workbench.ui.dashboard import Dashboard
from workbench.ui.monitoring import business_rows, drift_rows, quality_rows

SHIFTED = [20, 22, 23, 27]


@pytest.fixture(scope="module")
def data() -> TabularData:
    return load_tabular_data()


@pytest.fixture
def wb(demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workbench]:
    monkeypatch.setenv("WORKBENCH_UI_REFRESH_S", "0.05")
    monkeypatch.setenv("WORKBENCH_PREDICTION_LOG", f"sqlite:///{tmp_path / 'predictions.sqlite'}")
    with Workbench.inprocess() as workbench:
        yield workbench


def _feed(wb: Workbench, rows: np.ndarray, size: int = 8) -> list[str]:
    return [wb.predict("tabular", {"features": rows[s:s + size]}).request_id for s in range(0, len(rows), size)]


def test_drift_rows_list_the_worst_features_then_the_predictions() -> None:
    rng = np.random.default_rng(0)
    monitor = DriftMonitor({"x": rng.normal(size=(2000, 3))}, {"label": rng.choice(["a", "b"], 2000)})
    monitor.record({"x": rng.normal(size=(400, 3)) + np.array([0.0, 0.0, 2.0])}, {"label": rng.choice(["a", "b"], 400)})
    rows = drift_rows(monitor.report())
    assert [r["source"] for r in rows] == ["input", "input", "input", "prediction"]
    assert rows[0]["feature"] == "x[2]" and {r["feature"] for r in rows[1:3]} == {"x[0]", "x[1]"}
    assert rows[3]["feature"] == "label"
    assert rows[0]["level"] == "alert" and rows[0]["psi"] > 0.25 and rows[0]["rows"] == 400
    assert rows[1]["level"] == "ok"


def test_quality_rows_average_precision_and_recall_over_the_classes() -> None:
    quality = {"variants": {"gbt": {"count": 4, "accuracy": 0.75, "auc": 0.9, "classes": {
        "a": {"precision": 1.0, "recall": 0.5, "support": 2}, "b": {"precision": 0.5, "recall": None, "support": 0}}}}}
    assert quality_rows(quality) == [{"variant": "gbt", "count": 4, "accuracy": 0.75, "auc": 0.9,
                                      "precision": 0.75, "recall": 0.5}]
    assert quality_rows({"variants": {}, "log": "off"}) == []


def test_business_rows_hold_each_value_now_and_in_the_baseline() -> None:
    clock = ManualClock()
    monitor = BusinessMonitor([BusinessSignal("risk", "risk_bucket")], rule=ShiftRule(min_count=10), clock=clock)
    monitor.record({"risk_bucket": np.array(["low"] * 18 + ["high"] * 2)}, {"model": "gbt"})
    clock.now = 100.0
    monitor.record({"risk_bucket": np.array(["low"] * 4 + ["high"] * 16)}, {"model": "gbt"})
    rows = business_rows(monitor.report())
    assert [(r["value"], r["count"], r["share"], r["baseline"], r["shifted"]) for r in rows] == [
        ("high", 16, 0.8, 0.1, True), ("low", 4, 0.2, 0.9, True)]
    assert all(r["status"] == "shift" and r["variant"] == "gbt" and r["signal"] == "risk" for r in rows)


def test_the_panels_show_the_drift_quality_and_business_the_engine_reports(wb: Workbench,
                                                                          data: TabularData) -> None:
    wb.deploy("tabular", reference={"features": data.x_train})
    view: Dashboard = wb.dashboard("tabular")
    try:
        drift, quality, business = (view.parts[k] for k in ("drift", "quality", "business"))
        view.state.refresh()
        assert "collecting" in drift.status.object and "426 reference rows" in drift.status.object
        assert "no labels yet" in quality.status.object
        assert "no request answered yet" in business.body.object
        assert "building a baseline" in business.status.object
        clock = ManualClock()
        # NOTE: no request is in flight, so the engine may be called from this thread; the clock makes
        # the training rows the baseline and the shifted ones the current window.
        wb.engine.watch_business("tabular", clock=clock)
        _feed(wb, data.x_train)
        clock.now = 120.0
        shifted = data.x_test.copy()
        shifted[:, SHIFTED] *= 1.6
        ids = _feed(wb, shifted)
        labels = {request_id: [("malignant", "benign")[y] for y in data.y_test[i * 8:(i + 1) * 8]]
                  for i, request_id in enumerate(ids)}
        wb.feedback("tabular", labels)
        # NOTE: forced: the feed would otherwise reuse the sample it took a moment ago, before the traffic.
        view.state.refresh(force=True)
        stats = wb.stats("tabular")

        assert "alert" in drift.status.object
        worst = stats["drift"]["worst"][0]
        assert worst["feature"] in drift.body.object and f"{worst['psi']:.3f}" in drift.body.object

        gbt = stats["quality"]["variants"]["gbt"]
        assert gbt["count"] == len(data.x_test) and gbt["auc"] is not None
        assert f"{gbt['accuracy']:.3f}" in quality.body.object and f"{gbt['auc']:.3f}" in quality.body.object
        assert "AUC from <b>probability</b>" in quality.status.object

        risk = stats["business"]["variants"]["gbt"]["signals"]["risk"]
        assert risk["status"] == "shift"
        assert "a share moved" in business.status.object
        assert f"{risk['rates']['high']:.1%}" in business.body.object
        assert f"{risk['baseline_rates']['high']:.1%}" in business.body.object
        assert "wb-badge shift" in business.body.object
    finally:
        view.stop()


def test_a_pipeline_with_nothing_to_monitor_says_how_to_get_it(wb: Workbench) -> None:
    plain = demo_pipeline("tabular", load=False).to_dict()
    del plain["business"]
    wb.deploy(Pipeline.from_dict(plain, load=False), name="plain")
    view = wb.dashboard("plain")
    try:
        view.state.refresh()
        assert "no reference data" in view.parts["drift"].status.object
        assert "declares no business signals" in view.parts["business"].status.object
    finally:
        view.stop()
