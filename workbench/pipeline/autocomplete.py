"""A pipeline made from a model's own signature, as Triton's auto-complete makes a model's config.

``workbench serve model.onnx`` needs no pipeline file: the model goes into the
repository (see :mod:`workbench.models.importing`), and its pipeline is one ONNX
stage whose inputs and outputs are the model's, with the first axis as the
batch. The file written to the pipelines folder is an ordinary pipeline file:
edit it to add stages, and serve it by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from workbench.errors import ModelLoadError
from workbench.models.importing import DEFAULT_VARIANT, add_model
from workbench.models.repository import ModelRepository
from workbench.pipeline.graph import Pipeline
from workbench.pipeline.inference import OnnxStage
from workbench.tensor import TensorSpec

__all__ = ["add_served", "is_model_target", "model_files", "pipeline_for_model", "serve_files"]


def pipeline_for_model(repository: ModelRepository, model: str, variant: str = DEFAULT_VARIANT, *,
                       name: str | None = None, load: bool = True) -> Pipeline:
    """One ONNX stage over the model, batched on its first axis; inputs and outputs keep the model's names."""
    signature = repository.signature(model, variant)
    inputs = [TensorSpec(spec.name, spec.dtype, (-1, *spec.shape[1:]) if spec.shape else None)
              for spec in signature.inputs]
    return Pipeline(name or model, inputs, [OnnxStage(model, variant)], repository=repository, load=load,
                    description=f"model {model!r} ({variant}), served from its signature")


def model_files(target: str | Path) -> list[Path]:
    """The ONNX files a target names: the file itself, or the ``*.onnx`` files in a folder."""
    path = Path(target)
    if path.is_dir():
        files = sorted(path.glob("*.onnx"))
        if not files:
            raise ModelLoadError(f"no *.onnx file in folder {str(path)!r}")
        return files
    return [path]


def add_served(repository: ModelRepository, pipelines_dir: Path, name: str, file: Path, *,
               variant: str = DEFAULT_VARIANT, notes: str = "", keep_pipeline_file: bool = False,
               ) -> tuple[Path, Pipeline]:
    """Add ``file`` as ``name``/``variant`` and write the pipeline file that serves it (unless one is kept).

    Returns the pipeline file and the pipeline (unloaded).
    """
    add_model(repository, name, file, variant=variant, notes=notes or f"added from {file}")
    pipeline = pipeline_for_model(repository, name, variant, load=False)
    path = pipelines_dir / f"{name}.yaml"
    if not (keep_pipeline_file and path.exists()):
        pipeline.to_yaml(path)
    return path, pipeline


def serve_files(targets: Iterable[str | Path], repository: ModelRepository, pipelines_dir: Path) -> list[Path]:
    """Add each ONNX file to the repository (named after the file) and write its pipeline file; their paths."""
    return [add_served(repository, pipelines_dir, _plain_name(file.stem), file)[0]
            for target in targets for file in model_files(target)]


def is_model_target(target: str) -> bool:
    """Whether a ``workbench serve`` target names ONNX files (a ``.onnx`` file or a folder of them)."""
    path = Path(target)
    return path.suffix == ".onnx" or (path.is_dir() and any(path.glob("*.onnx")))


def _plain_name(stem: str) -> str:
    """A repository name from a file name: characters other than letters, digits, ``_-.`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem).strip(".-") or "model"
