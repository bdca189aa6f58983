"""The ``tabular`` demo: breast-cancer diagnosis from 30 measurements.

Two variants of one classifier, trained on scikit-learn's breast-cancer data
and converted with skl2onnx: a gradient-boosted model (``gbt``) and a logistic
regression (``logreg``). Served inputs have missing values injected, so the
pipeline imputes, clips and standardises before the model, then names the label,
its probability and a risk bucket (the probability of malignancy). The risk bucket
and the label are declared business signals: their mix is counted per variant
and a sudden shift is flagged (:mod:`workbench.monitor.business`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.models.metadata import ModelMetadata
from workbench.models.repository import ModelRepository
from workbench.pipeline import Clip, ConfidenceBuckets, Impute, LabelMap, OnnxStage, Pipeline, Standardize
from workbench.pipeline.signals import BusinessSignal
from workbench.tensor import TensorSpec

__all__ = [
    "LABELS", "FittedTabular", "TabularData", "build_tabular", "fit_tabular", "inject_missing", "load_tabular_data",
]

LABELS = ["malignant", "benign"]
MISSING_RATE = 0.1
RISK_EDGES = [0.2, 0.6]
RISK_LABELS = ["low", "medium", "high"]
SEED = 0


@dataclass(frozen=True, slots=True)
class TabularData:
    """The split the demo models were trained and evaluated on (float32, test rows with NaN)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def inject_missing(x: np.ndarray, rate: float = MISSING_RATE, seed: int = SEED) -> np.ndarray:
    """A copy of ``x`` with a share ``rate`` of its cells set to NaN."""
    rng = np.random.default_rng(seed)
    out = np.array(x, dtype=np.float32, copy=True)
    out[rng.random(out.shape) < rate] = np.nan
    return out


def load_tabular_data() -> TabularData:
    """Breast-cancer data, split 75/25 (stratified), NaN injected into the test rows."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    return TabularData(
        x_train.astype(np.float32), y_train.astype(np.int64), inject_missing(x_test), y_test.astype(np.int64)
    )


@dataclass(slots=True)
class FittedTabular:
    """The fitted pre-processing stages and the two scikit-learn estimators."""

    impute: Impute
    clip: Clip
    scale: Standardize
    estimators: dict[str, Any]

    def transform(self, x: np.ndarray) -> np.ndarray:
        """What the pre-processing stages make of raw rows (the models' input)."""
        (imputed,) = self.impute.run(np.asarray(x, dtype=np.float32))
        return self.scale.run(*self.clip.run(imputed))[0]


def fit_tabular(data: TabularData) -> FittedTabular:
    """Fit pre-processing on the training rows, then both estimators on its output (deterministic)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    impute = Impute.fit(data.x_train, input="features", output="imputed", strategy="median", name="impute")
    clip = Clip.fit(data.x_train, input="imputed", output="clipped", name="clip")
    (clipped,) = clip.run(data.x_train)
    scale = Standardize.fit(clipped, input="clipped", output="scaled", name="standardize")
    fitted = FittedTabular(impute, clip, scale, {})
    x_fit = fitted.transform(data.x_train)
    fitted.estimators = {
        "gbt": GradientBoostingClassifier(random_state=SEED).fit(x_fit, data.y_train),
        "logreg": LogisticRegression(max_iter=2000).fit(x_fit, data.y_train),
    }
    return fitted


def build_tabular(repository: ModelRepository, pipelines_dir: Path) -> Path:
    """Train both variants, store them in the repository and write ``tabular.yaml``."""
    from skl2onnx import to_onnx
    from sklearn.metrics import accuracy_score, roc_auc_score

    data = load_tabular_data()
    fitted = fit_tabular(data)
    x_eval = fitted.transform(data.x_test)
    for variant, estimator in fitted.estimators.items():
        probabilities = estimator.predict_proba(x_eval)
        quality = {
            "accuracy": round(float(accuracy_score(data.y_test, probabilities.argmax(1))), 4),
            "auc": round(float(roc_auc_score(data.y_test, probabilities[:, 1])), 4),
        }
        onnx_model = to_onnx(estimator, x_eval[:1], options={"zipmap": False}, target_opset=17)
        repository.add(
            "tabular", variant, onnx_model.SerializeToString(),
            ModelMetadata(quality=quality, labels=LABELS,
                          notes=f"scikit-learn {type(estimator).__name__} on breast_cancer (75% split, seed {SEED}), "
                                f"converted with skl2onnx; quality measured on the held-out 25% with "
                                f"{MISSING_RATE:.0%} of values missing"),
        )

    pipeline = Pipeline(
        "tabular",
        [TensorSpec("features", "float32", (-1, data.x_train.shape[1]), allow_nan=True)],
        [
            fitted.impute, fitted.clip, fitted.scale,
            OnnxStage("tabular", "gbt", name="model", inputs={"X": "scaled"},
                      outputs={"label": "class_index", "probabilities": "probabilities"}),
            LabelMap("probabilities", ["label", "probability"], labels=LABELS, name="label"),
            ConfidenceBuckets("probabilities", "risk_bucket", edges=RISK_EDGES, labels=RISK_LABELS, column=0,
                              name="risk"),
        ],
        outputs=["label", "probability", "risk_bucket", "probabilities"],
        repository=repository,
        load=False,
        description="Breast-cancer diagnosis: impute, clip, standardise, classify; label, probability, risk bucket.",
        business=[BusinessSignal("risk", "risk_bucket"), BusinessSignal("label", "label")],
    )
    path = pipelines_dir / "tabular.yaml"
    pipeline.to_yaml(path)
    return path
