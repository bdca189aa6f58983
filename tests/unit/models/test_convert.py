"""A notebook's sklearn or torch model, converted, checked against itself and added with its quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from own_models import iris, iris_classifier
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from workbench.errors import ModelLoadError
from workbench.models import ModelRepository, from_sklearn, from_torch


def _run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_an_sklearn_classifier_is_added_with_tensors_labels_and_accuracy(tmp_path: Path) -> None:
    features, species = iris()
    classifier = iris_classifier()
    repository = ModelRepository(tmp_path / "models")
    path = from_sklearn(classifier, features, name="iris", y=species, repository=repository)
    metadata = repository.metadata("iris", "default")
    assert metadata.labels == ["setosa", "versicolor", "virginica"]
    assert metadata.quality == {"accuracy": pytest.approx(classifier.score(features, species))}
    labels, probabilities = _run(path, {"X": features})
    np.testing.assert_array_equal(labels, classifier.predict(features))
    np.testing.assert_allclose(probabilities, classifier.predict_proba(features), rtol=1e-4, atol=1e-5)
    assert repository.signature("iris", "default").inputs[0].shape == (-1, 4)


def test_an_sklearn_regressor_records_r2(tmp_path: Path) -> None:
    features, target = load_diabetes(return_X_y=True)
    regressor = Ridge().fit(features, target)
    repository = ModelRepository(tmp_path / "models")
    path = from_sklearn(regressor, features, name="diabetes", variant="ridge", y=target, repository=repository)
    assert repository.metadata("diabetes", "ridge").quality["r2"] == pytest.approx(
        regressor.score(features, target), abs=1e-4)
    np.testing.assert_allclose(_run(path, {"X": features.astype(np.float32)})[0].ravel(),
                               regressor.predict(features), rtol=1e-3)


def test_a_sample_that_is_no_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-empty 2-d table"):
        from_sklearn(iris_classifier(), iris()[0][0], name="iris", repository=tmp_path)


def test_a_torch_module_is_exported_with_a_dynamic_batch_axis(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    sample = torch.randn(5, 4)
    repository = ModelRepository(tmp_path / "models")
    classes = module(sample).argmax(dim=1).numpy()
    path = from_torch(module, sample, name="mlp", y=classes, input_names=["features"], output_names=["scores"],
                      repository=repository)
    assert repository.metadata("mlp", "default").quality == {"accuracy": 1.0}
    rows = torch.randn(17, 4)
    (scores,) = _run(path, {"features": rows.numpy()})
    np.testing.assert_allclose(scores, module(rows).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_torch_names_must_match_the_inputs_and_outputs(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="1 inputs and 1 outputs, but names"):
        from_torch(torch.nn.Linear(4, 2), torch.randn(2, 4), name="m", input_names=["a", "b"], repository=tmp_path)


def test_a_conversion_that_changes_the_answers_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = iris_classifier()
    features, _ = iris()
    wrong = classifier.predict(features)[::-1]
    monkeypatch.setattr(type(classifier), "predict", lambda self, x: wrong)  # what the ONNX model must agree with
    with pytest.raises(ModelLoadError, match="agrees with the estimator on"):
        from_sklearn(classifier, features, name="iris", repository=tmp_path)
    assert ModelRepository(tmp_path).models() == []
