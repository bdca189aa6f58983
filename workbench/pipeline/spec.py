"""Pipeline files: a pipeline written as YAML (or a dict) and read back.

A file and the Python API give the same object: ``Pipeline.from_yaml(p.to_yaml())``
has the same ``to_dict()`` as ``p``. The file is what gets deployed::

    name: tabular
    repository: ../models            # relative to this file
    inputs:
      features: {spec: "float32[-1,30]", allow_nan: true}
    stages:
      - {name: impute, type: impute, inputs: [features], outputs: [filled], strategy: median, values: [...]}
      - {name: model, type: onnx, model: tabular, variant: gbt, inputs: {input: filled}}
    outputs: [label, probability]
    business:                        # optional: outputs watched as business signals
      - {name: risk, output: risk_bucket}
    reference: train.parquet         # optional: the rows drift is scored against, beside this file
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from workbench.errors import SpecError, WorkbenchError
from workbench.models.repository import ModelRepository
from workbench.pipeline.cached import CachedFeatures
from workbench.pipeline.custom import FunctionStage
from workbench.pipeline.features import Aggregate, PCAProjection
from workbench.pipeline.inference import OnnxStage
from workbench.pipeline.postprocess import ConfidenceBuckets, LabelMap, Threshold, TopK
from workbench.pipeline.preprocess import Clip, Impute, MinMaxScale, OneHot, Ordinal, Standardize, Tokenize
from workbench.pipeline.signals import signals_from_data
from workbench.pipeline.stage import Stage
from workbench.ranking.stage import Rank
from workbench.tensor import TensorSpec

if TYPE_CHECKING:
    from workbench.pipeline.graph import Pipeline

__all__ = ["STAGE_TYPES", "dump_yaml", "load_yaml", "pipeline_from_dict", "pipeline_to_dict", "stage_from_dict"]

#: Stage classes by the ``type`` used in pipeline files.
STAGE_TYPES: Mapping[str, type[Stage]] = {
    cls.type_name: cls
    for cls in (
        Impute, Clip, Standardize, MinMaxScale, OneHot, Ordinal, Tokenize,
        PCAProjection, Aggregate, CachedFeatures,
        OnnxStage,
        LabelMap, TopK, Threshold, ConfidenceBuckets, Rank,
        FunctionStage,
    )
}


def stage_from_dict(data: Mapping[str, Any]) -> Stage:
    """Build one stage from its file form; errors name the stage."""
    if not isinstance(data, Mapping):
        raise SpecError(f"a stage must be a mapping, not {type(data).__name__}")
    label = data.get("name") or data.get("type") or "?"
    stage_type = str(data.get("type"))
    if stage_type not in STAGE_TYPES:
        raise SpecError(f"stage {label!r}: unknown type {stage_type!r}; known types: {sorted(STAGE_TYPES)}")
    try:
        return STAGE_TYPES[stage_type].from_dict(dict(data))
    except WorkbenchError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise SpecError(f"stage {label!r} ({stage_type}): {exc}") from exc


def _input_spec(name: str, value: Any) -> TensorSpec:
    try:
        if isinstance(value, str):
            return TensorSpec.parse(name, value)
        if isinstance(value, Mapping):
            return TensorSpec.parse(name, value["spec"], allow_nan=bool(value.get("allow_nan", False)))
    except (KeyError, ValueError) as exc:
        raise SpecError(f"input {name!r}: {exc}") from exc
    raise SpecError(f"input {name!r}: write a spec such as 'float32[-1,30]'")


def pipeline_from_dict(
    data: Mapping[str, Any], *, repository: ModelRepository | str | Path | None = None, load: bool = True,
    base: Path | None = None,
) -> Pipeline:
    """Build a pipeline from plain data; ``base`` resolves a relative ``repository``."""
    from workbench.pipeline.graph import Pipeline

    if not isinstance(data, Mapping):
        raise SpecError("a pipeline file must hold a mapping")
    unknown = set(data) - {"name", "description", "repository", "inputs", "stages", "outputs", "business",
                          "instances", "reference"}
    if unknown:
        raise SpecError(f"unknown pipeline keys {sorted(unknown)}")
    for key in ("name", "inputs", "stages"):
        if key not in data:
            raise SpecError(f"a pipeline needs {key!r}")
    if not isinstance(data["inputs"], Mapping) or not isinstance(data["stages"], list):
        raise SpecError("'inputs' must be a mapping of name to spec and 'stages' a list")
    if repository is None:
        repository = _beside(data.get("repository"), base)
    reference = _beside(data.get("reference"), base)
    inputs = [_input_spec(n, v) for n, v in data["inputs"].items()]
    stages = [stage_from_dict(s) for s in data["stages"]]
    return Pipeline(str(data["name"]), inputs, stages, outputs=data.get("outputs"), repository=repository,
                    load=load, description=str(data.get("description", "")),
                    business=signals_from_data(data.get("business")), instances=data.get("instances"),
                    reference=reference)


def pipeline_to_dict(pipeline: Pipeline, *, relative_to: Path | None = None) -> dict[str, Any]:
    """The file form of a pipeline."""
    data: dict[str, Any] = {"name": pipeline.name}
    if pipeline.description:
        data["description"] = pipeline.description
    if pipeline.repository is not None:
        data["repository"] = _written(pipeline.repository.root, relative_to)
    data["inputs"] = {
        n: ({"spec": s.text(), "allow_nan": True} if s.allow_nan else s.text()) for n, s in pipeline.input_specs.items()
    }
    data["stages"] = [s.to_dict() for s in pipeline.stages]
    data["outputs"] = list(pipeline.output_names)
    if pipeline.business:
        data["business"] = [signal.to_dict() for signal in pipeline.business]
    if pipeline.instances is not None:
        data["instances"] = pipeline.instances
    if pipeline.reference is not None:
        data["reference"] = _written(pipeline.reference, relative_to)
    return data


def _beside(value: Any, base: Path | None) -> Path | None:
    """A path a pipeline file names (``repository``, ``reference``): a relative one is relative to the file."""
    if not value:
        return None
    path = Path(value)
    return base / path if not path.is_absolute() and base is not None else path


def _written(path: Path, relative_to: Path | None) -> str:
    return os.path.relpath(path, relative_to) if relative_to is not None else str(path)


def dump_yaml(pipeline: Pipeline, path: str | Path | None = None) -> str:
    """Write the pipeline as YAML (to ``path`` when given, with the repository relative to it)."""
    target = Path(path) if path is not None else None
    data = pipeline_to_dict(pipeline, relative_to=target.resolve().parent if target is not None else None)
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return text


def load_yaml(path: str | Path, *, repository: ModelRepository | str | Path | None = None,
              load: bool = True) -> Pipeline:
    """Read a pipeline file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read pipeline file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"pipeline file {path} is not valid YAML: {exc}") from exc
    return pipeline_from_dict(data, repository=repository, load=load, base=path.resolve().parent)
