"""Drift on a served pipeline: held-out rows raise no alert, shifted features do, and the label mix moves it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workbench.api import Workbench
from workbench.demo.tabular import load_tabular_data
from workbench.errors import WorkbenchError
from workbench.pipeline import Pipeline

SHIFTED = (0, 5, 7)


def _feed(wb: Workbench, rows: np.ndarray, size: int = 8) -> None:
    for start in range(0, len(rows), size):
        wb.predict("tabular", {"features": rows[start:start + size]})


def test_drift_alerts_on_shifted_features_only(tabular_pipeline: Pipeline) -> None:
    data = load_tabular_data()
    with Workbench.inprocess() as wb:
        wb.deploy(tabular_pipeline, name="tabular", reference={"features": data.x_train})
        assert wb.stats("tabular")["drift"]["level"] == "collecting"
        assert wb.stats("tabular")["drift"]["reference_rows"] == len(data.x_train)

        _feed(wb, data.x_test)
        held_out = wb.stats("tabular")["drift"]
        assert held_out["live_rows"] == len(data.x_test)
        assert held_out["level"] in {"ok", "warn"} and held_out["alerts"] == [], held_out["worst"]
        assert held_out["prediction_level"] != "alert"
        text = wb.metrics_text()
        assert 'workbench_drift_alert_level{pipeline="tabular"}' in text
        assert 'workbench_drift_alert_level{pipeline="tabular"} 2.0' not in text

        wb.set_reference("tabular", {"features": data.x_train})  # a fresh live window
        shifted = data.x_test.copy()
        shifted[:, list(SHIFTED)] *= 1.6
        _feed(wb, shifted)
        drift = wb.stats("tabular")["drift"]
        assert drift["level"] == "alert"
        assert set(drift["alerts"]) == {f"features[{i}]" for i in SHIFTED}
        assert {w["feature"] for w in drift["worst"][:3]} == {f"features[{i}]" for i in SHIFTED}
        text = wb.metrics_text()
        assert 'workbench_drift_alert_level{pipeline="tabular"} 2.0' in text
        assert 'workbench_drift_psi{feature="features[5]",pipeline="tabular",source="input"}' in text


def test_prediction_drift_follows_the_label_mix(tabular_pipeline: Pipeline) -> None:
    data = load_tabular_data()
    with Workbench.inprocess() as wb:
        wb.deploy(tabular_pipeline, name="tabular")
        assert wb.drift("tabular") == {"level": "no_reference"}
        wb.set_reference("tabular", {"features": data.x_train})
        _feed(wb, data.x_test)
        balanced = wb.drift("tabular")
        assert balanced["prediction"]["label"]["psi"] < 0.1

        wb.set_reference("tabular", {"features": data.x_train})
        _feed(wb, np.concatenate([data.x_train[data.y_train == 0], data.x_test[data.y_test == 0]]))
        malignant = wb.drift("tabular")
        assert malignant["prediction"]["label"]["psi"] > 0.25
        assert malignant["prediction_level"] == "alert"
        assert malignant["prediction_psi"] > balanced["prediction_psi"]
        assert any(e["event"] == "drift_reference" for e in wb.stats("tabular")["events"])


def test_set_reference_checks_the_inputs(tabular_pipeline: Pipeline) -> None:
    with Workbench.inprocess() as wb:
        wb.deploy(tabular_pipeline, name="tabular")
        with pytest.raises(Exception, match="features"):
            wb.set_reference("tabular", {"features": np.zeros((10, 3), dtype=np.float32)})


@pytest.mark.parametrize("kind", ["parquet", "npy", "npz", "csv"])
def test_a_pipeline_file_names_its_reference(tmp_path: Path, tabular_pipeline: Pipeline, kind: str) -> None:
    data = load_tabular_data()
    rows = data.x_train[:200]
    target = tmp_path / f"train.{kind}"
    if kind == "npy":
        np.save(target, rows)
    elif kind == "npz":
        np.savez(target, features=rows)
    else:
        frame = pd.DataFrame(rows, columns=[f"features_{i}" for i in range(rows.shape[1])])
        frame.to_parquet(target) if kind == "parquet" else frame.to_csv(target, index=False)
    tabular_pipeline.to_yaml(tmp_path / "tabular.yaml")
    spec = yaml.safe_load((tmp_path / "tabular.yaml").read_text())
    (tmp_path / "tabular.yaml").write_text(yaml.safe_dump({**spec, "reference": target.name}))
    served = Pipeline.from_yaml(tmp_path / "tabular.yaml")
    assert served.reference == target
    assert yaml.safe_load(served.to_yaml(tmp_path / "again.yaml"))["reference"] == target.name
    with Workbench.inprocess() as wb:
        wb.deploy(tmp_path / "tabular.yaml")
        assert wb.drift("tabular")["reference_rows"] == len(rows)


def test_a_missing_reference_file_fails_the_deploy_naming_it(tmp_path: Path, tabular_pipeline: Pipeline) -> None:
    tabular_pipeline.to_yaml(tmp_path / "tabular.yaml")
    spec = yaml.safe_load((tmp_path / "tabular.yaml").read_text())
    (tmp_path / "tabular.yaml").write_text(yaml.safe_dump({**spec, "reference": "gone.parquet"}))
    with Workbench.inprocess() as wb:
        with pytest.raises(WorkbenchError, match=r"no reference file .*gone\.parquet"):
            wb.deploy(tmp_path / "tabular.yaml")
        assert wb.deployments() == [], "nothing is deployed"
