"""A pipeline from a model's signature: the model's names, batched on the first axis, one row a run if fixed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from own_models import WEIGHTS, iris, linear_model, zipmap_model

from workbench.errors import ModelLoadError
from workbench.models import ModelRepository, add_model
from workbench.pipeline import Pipeline
from workbench.pipeline.autocomplete import is_model_target, model_files, pipeline_for_model, serve_files

ROWS = np.arange(20, dtype=np.float32).reshape(5, 4)


@pytest.mark.parametrize("batch", [None, 1])
def test_the_pipeline_serves_batches_whether_the_batch_axis_is_dynamic_or_one(tmp_path: Path,
                                                                              batch: int | None) -> None:
    repository = ModelRepository(tmp_path / "models")
    add_model(repository, "linear", linear_model(tmp_path / "linear.onnx", batch))
    pipeline = pipeline_for_model(repository, "linear")
    assert [(s.name, s.dtype, s.shape) for s in pipeline.input_specs.values()] == [("features", "float32", (-1, 4))]
    assert [(s.name, s.shape) for s in pipeline.output_specs.values()] == [("scores", (-1, 3))]
    np.testing.assert_allclose(pipeline.predict({"features": ROWS})["scores"], ROWS @ WEIGHTS, rtol=1e-6)


def test_serve_files_adds_each_model_and_writes_a_pipeline_file_to_serve_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    zipmap_model(folder / "iris flowers.onnx")
    linear_model(folder / "linear.onnx")
    assert is_model_target(str(folder)) and is_model_target("x.onnx") and not is_model_target("tabular")
    repository = ModelRepository(tmp_path / "models")
    written = serve_files([folder], repository, tmp_path / "pipelines")
    assert [p.name for p in written] == ["iris-flowers.yaml", "linear.yaml"]
    served = Pipeline.from_yaml(written[0])
    assert served.repository is not None and served.repository.root == repository.root
    probabilities = served.predict({"X": iris()[0][:3]})["output_probability"]
    assert probabilities.shape == (3, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_a_folder_without_models_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no \*\.onnx file in folder"):
        model_files(tmp_path)
