"""The tabular demo: ONNX models agree with scikit-learn; the pipeline is accurate on held-out rows."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.demo.tabular import LABELS, RISK_EDGES, fit_tabular, load_tabular_data
from workbench.models import ModelRepository
from workbench.pipeline import Pipeline


@pytest.mark.parametrize("variant", ["gbt", "logreg"])
def test_onnx_variant_matches_scikit_learn(repository: ModelRepository, variant: str) -> None:
    data = load_tabular_data()
    fitted = fit_tabular(data)
    x = fitted.transform(np.concatenate([data.x_train, data.x_test]))
    expected = fitted.estimators[variant].predict_proba(x)
    session = repository.load("tabular", variant).session
    labels, probabilities = session.run(["label", "probabilities"], {"X": x})
    assert (labels == expected.argmax(1)).all()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


@pytest.mark.parametrize("variant", ["gbt", "logreg"])
def test_held_out_accuracy_with_missing_values(
    tabular_pipeline: Pipeline, repository: ModelRepository, variant: str, record_property: pytest.RecordProperty,
) -> None:
    data = load_tabular_data()
    assert np.isnan(data.x_test).mean() > 0.05, "the served rows must have missing values"
    pipeline = tabular_pipeline.with_variant(variant)
    result = pipeline.predict({"features": data.x_test})
    accuracy = float((result["label"] == np.array(LABELS, dtype=object)[data.y_test]).mean())
    record_property(f"tabular_{variant}_accuracy", accuracy)
    print(f"\ntabular/{variant}: held-out accuracy {accuracy:.4f} on {len(data.y_test)} rows with missing values")
    assert accuracy > 0.92
    assert accuracy == pytest.approx(repository.metadata("tabular", variant).quality["accuracy"], abs=1e-3)


def test_outputs_are_consistent(tabular_pipeline: Pipeline) -> None:
    data = load_tabular_data()
    result = tabular_pipeline.predict({"features": data.x_test[:50]})
    p = result["probabilities"]
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result["probability"], p.max(1))
    expected_bucket = np.array(["low", "medium", "high"], dtype=object)[np.searchsorted(RISK_EDGES, p[:, 0], "right")]
    assert (result["risk_bucket"] == expected_bucket).all()
    assert set(result.timings_ms) >= {"impute", "clip", "standardize", "model", "label", "risk", "total"}


def test_a_row_of_only_missing_values_gets_the_median_patient(tabular_pipeline: Pipeline) -> None:
    row = np.full((1, 30), np.nan, dtype=np.float32)
    stage = tabular_pipeline.stage("impute")
    imputed = tabular_pipeline.predict({"features": row}, outputs=["imputed"])["imputed"]
    np.testing.assert_allclose(imputed[0], stage.values)  # type: ignore[attr-defined]
