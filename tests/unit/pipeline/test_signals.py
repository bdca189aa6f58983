"""Business signals in a pipeline: declared in Python or YAML alike, checked at build time against the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from workbench.errors import PipelineWiringError, SpecError
from workbench.pipeline import BusinessSignal, ConfidenceBuckets, LabelMap, Pipeline, TensorSpec

BUCKETS = {"name": "risk", "type": "buckets", "inputs": ["scores"], "outputs": ["risk_bucket"], "edges": [0.2, 0.6],
           "labels": ["low", "medium", "high"], "column": 0}
LABELS = {"name": "label", "type": "labels", "inputs": ["scores"], "outputs": ["label", "confidence"],
          "labels": ["yes", "no"]}


def spec(business: Any, outputs: list[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "scored", "inputs": {"scores": "float32[-1,2]"}, "stages": [BUCKETS, LABELS],
                            "business": business}
    if outputs is not None:
        data["outputs"] = outputs
    return data


def python_pipeline(business: list[BusinessSignal]) -> Pipeline:
    return Pipeline("scored", [TensorSpec("scores", "float32", (-1, 2))], [
        ConfidenceBuckets("scores", "risk_bucket", edges=[0.2, 0.6], labels=["low", "medium", "high"], column=0,
                          name="risk"),
        LabelMap("scores", ["label", "confidence"], labels=["yes", "no"], name="label")], business=business)


def test_python_and_yaml_declare_the_same_signals(tmp_path: Path) -> None:
    signals = [BusinessSignal("risk", "risk_bucket", values=("high",)),
               BusinessSignal("confident", "confidence", above=0.9), BusinessSignal("label", "label")]
    from_python = python_pipeline(signals)
    path = tmp_path / "scored.yaml"
    from_python.to_yaml(path)
    written = yaml.safe_load(path.read_text())
    assert written["business"] == [{"name": "risk", "output": "risk_bucket", "values": ["high"]},
                                   {"name": "confident", "output": "confidence", "above": 0.9},
                                   {"name": "label", "output": "label"}]
    again = Pipeline.from_yaml(path)
    assert again.business == from_python.business == tuple(signals)
    assert [s.kind for s in again.business] == ["categorical", "threshold", "categorical"]


def test_a_pipeline_without_signals_writes_none() -> None:
    assert "business" not in python_pipeline([]).to_dict()
    assert Pipeline.from_dict(spec(None)).business == ()


def test_a_signal_on_a_missing_output_names_it() -> None:
    with pytest.raises(PipelineWiringError, match=r"reads output 'risk_level'.*outputs: \['confidence', 'label', "
                                                  r"'risk_bucket'\]") as caught:
        Pipeline.from_dict(spec([{"name": "risk", "output": "risk_level"}]))
    assert caught.value.tensor == "risk_level"


def test_a_signal_on_an_output_the_pipeline_does_not_return_names_it() -> None:
    with pytest.raises(PipelineWiringError, match="reads output 'confidence'"):
        Pipeline.from_dict(spec([{"name": "sure", "output": "confidence", "above": 0.9}],
                                outputs=["label", "risk_bucket"]))


def test_the_kind_of_signal_must_fit_the_output() -> None:
    with pytest.raises(PipelineWiringError, match=r"output 'confidence' is float32.*one label per row"):
        Pipeline.from_dict(spec([{"name": "sure", "output": "confidence"}]))
    with pytest.raises(PipelineWiringError, match=r"output 'label' is str.*one float score per row"):
        Pipeline.from_dict(spec([{"name": "approved", "output": "label", "above": 0.5}]))


def test_bad_declarations_are_refused_with_the_reason() -> None:
    with pytest.raises(SpecError, match="must be a list"):
        Pipeline.from_dict(spec({"risk": "risk_bucket"}))
    with pytest.raises(SpecError, match=r"unknown keys \['threshold'\]"):
        Pipeline.from_dict(spec([{"name": "risk", "output": "risk_bucket", "threshold": 3}]))
    with pytest.raises(SpecError, match="not both"):
        Pipeline.from_dict(spec([{"name": "risk", "output": "risk_bucket", "values": ["high"], "above": 0.5}]))
    with pytest.raises(SpecError, match="letters, digits"):
        Pipeline.from_dict(spec([{"name": "risk share", "output": "risk_bucket"}]))
    with pytest.raises(PipelineWiringError, match="two business signals are named 'risk'"):
        Pipeline.from_dict(spec([{"name": "risk", "output": "risk_bucket"}, {"name": "risk", "output": "label"}]))


def test_the_tabular_demo_declares_its_risk_bucket_and_label(tabular_pipeline: Pipeline) -> None:
    assert [(s.name, s.output) for s in tabular_pipeline.business] == [("risk", "risk_bucket"), ("label", "label")]
    assert tabular_pipeline.with_variant("logreg", load=False).business == tabular_pipeline.business
