"""Models made elsewhere, brought in: ZipMap made a tensor, a batch axis checked, versions counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from own_models import iris, linear_model, zipmap_model

from workbench.errors import ModelLoadError
from workbench.models import ModelRepository, add_model
from workbench.models.importing import without_zipmap


def test_a_zipmap_output_becomes_the_probability_tensor_it_maps(tmp_path: Path) -> None:
    original = zipmap_model(tmp_path / "iris.onnx")
    features = iris()[0][::10]
    labels, maps = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"]).run(None, {"X": features})
    fixed, classes = without_zipmap(onnx.load(str(original)))
    assert classes == ["setosa", "versicolor", "virginica"]
    session = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["output_label", "output_probability"]
    new_labels, probabilities = session.run(None, {"X": features})
    assert probabilities.shape == (len(features), 3) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities, [[row[c] for c in classes] for row in maps])
    np.testing.assert_array_equal(new_labels, labels)


def test_add_stores_a_servable_variant_and_counts_versions(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path / "models")
    path = add_model(repository, "iris", zipmap_model(tmp_path / "iris.onnx"), notes="from a test")
    assert path == repository.path("iris", "default")
    metadata = repository.metadata("iris", "default")
    assert (metadata.version, metadata.labels, metadata.notes) == (1, ["setosa", "versicolor", "virginica"],
                                                                    "from a test")
    assert [s.shape for s in repository.signature("iris", "default").outputs] == [(-1,), (-1, 3)]
    add_model(repository, "iris", zipmap_model(tmp_path / "again.onnx"))
    assert repository.metadata("iris", "default").version == 1, "the same model again is no new version"
    add_model(repository, "iris", linear_model(tmp_path / "other.onnx"))
    assert repository.metadata("iris", "default").version == 2
    assert repository.load("iris", "default").signature.outputs[0].name == "scores"


def test_a_zipmap_model_put_in_by_hand_is_refused_with_the_fix(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path / "models")
    (tmp_path / "models" / "iris" / "v1").mkdir(parents=True)
    zipmap_model(tmp_path / "models" / "iris" / "v1" / "model.onnx")
    for read in (lambda: repository.signature("iris", "v1"), lambda: repository.load("iris", "v1")):
        with pytest.raises(ModelLoadError, match="ZipMap output: add the model with `workbench models add`"):
            read()


def test_a_fixed_batch_axis_other_than_one_is_refused_with_the_fix(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path / "models")
    with pytest.raises(ModelLoadError, match=r"fixed first axis of 8.*dynamic_axes=\{'features': \{0: 'batch'\}\}"):
        add_model(repository, "linear", linear_model(tmp_path / "fixed.onnx", batch=8))
    assert repository.models() == [], "nothing is written for a refused model"
    add_model(repository, "linear", linear_model(tmp_path / "one.onnx", batch=1))  # one row a run: servable


def test_a_file_that_is_no_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot read model 'bad'"):
        add_model(ModelRepository(tmp_path / "models"), "bad", tmp_path / "bad.onnx")
