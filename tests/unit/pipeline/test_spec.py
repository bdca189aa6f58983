"""Pipeline files: Python and YAML give the same pipeline; bad files give clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench import SpecError
from workbench.models import ModelRepository
from workbench.pipeline import FunctionStage, Impute, Pipeline, TensorSpec


def halve(x: np.ndarray) -> np.ndarray:
    return x / 2


def test_demo_pipeline_round_trips_through_yaml(tabular_pipeline: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "copy.yaml"
    tabular_pipeline.to_yaml(path)
    again = Pipeline.from_yaml(path)
    assert again.to_dict() == tabular_pipeline.to_dict()
    assert again.repository is not None and tabular_pipeline.repository is not None
    assert again.repository.root == tabular_pipeline.repository.root
    x = np.random.default_rng(0).normal(10, 3, size=(4, 30)).astype(np.float32)
    x[0, 3] = np.nan
    np.testing.assert_array_equal(again.predict({"features": x})["probabilities"],
                                  tabular_pipeline.predict({"features": x})["probabilities"])


def test_python_and_yaml_build_the_same_object(repository: ModelRepository, tmp_path: Path) -> None:
    stages = [
        Impute("x", "filled", values=[1.0, 2.0], strategy="constant", name="impute"),
        FunctionStage(halve, inputs=["filled"], outputs={"half": "float32[-1,2]"}, kind="features", name="halve"),
    ]
    from_python = Pipeline("p", [TensorSpec("x", "float32", (-1, 2), allow_nan=True)], stages,
                           repository=repository)
    text = f"""
name: p
repository: {repository.root}
inputs:
  x: {{spec: "float32[-1,2]", allow_nan: true}}
stages:
  - {{name: impute, type: impute, inputs: [x], outputs: [filled], strategy: constant, values: [1.0, 2.0]}}
  - name: halve
    type: python
    kind: features
    function: "{__name__}:halve"
    inputs: [filled]
    outputs: {{half: "float32[-1,2]"}}
"""
    path = tmp_path / "p.yaml"
    path.write_text(text)
    from_yaml = Pipeline.from_yaml(path)
    assert from_yaml.to_dict() == from_python.to_dict()
    x = np.array([[np.nan, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(from_yaml.predict({"x": x})["half"], [[0.5, 2.0]])


def test_relative_repository_is_taken_from_the_file_folder(repository: ModelRepository, tmp_path: Path) -> None:
    pipeline = Pipeline("p", {"x": "float32[-1,30]"}, [Impute("x", "y", values=[0.0] * 30)], repository=repository)
    path = tmp_path / "nested" / "p.yaml"
    pipeline.to_yaml(path)
    written = yaml.safe_load(path.read_text())
    assert not Path(written["repository"]).is_absolute()
    assert Pipeline.from_yaml(path).repository.root == repository.root  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just a list", "must hold a mapping"),
        ("name: p\ninputs: {x: 'float32[-1,2]'}", "a pipeline needs 'stages'"),
        ("name: p\ninputs: {x: 'float32[-1,2]'}\nstages: []\nextra: 1", "unknown pipeline keys"),
        ("name: p\ninputs: {x: 'blob[-1]'}\nstages: []", "input 'x'"),
        ("name: p\ninputs: {x: 'float32[-1,2]'}\nstages: [{name: s, type: teleport}]", "unknown type 'teleport'"),
        ("name: p\ninputs: {x: 'float32[-1,2]'}\nstages: [{name: s, type: impute, inputs: [x], outputs: [y]}]",
         r"stage 's' \(impute\)"),
        ("name: p\ninputs: {x: 'float32[-1,2]'}\nstages: [{name: s, type: python, function: 'no.such:thing', "
         "inputs: [x], outputs: {y: float32}}]", "cannot import function 'no.such:thing'"),
        ("name: p\ninputs: [unclosed", "not valid YAML"),
    ],
)
def test_bad_files_raise_spec_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        Pipeline.from_yaml(path)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read pipeline file"):
        Pipeline.from_yaml(tmp_path / "absent.yaml")
