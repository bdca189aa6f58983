"""Inference Workbench: build, explore, tune and serve staged ML inference pipelines."""

from __future__ import annotations

from workbench.api import Workbench
from workbench.errors import (
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelPathRefused,
    PipelineWiringError,
    SpecError,
    StageFailed,
    WorkbenchError,
)
from workbench.models import ModelMetadata, ModelRepository, SessionConfig
from workbench.pipeline import FunctionStage, OnnxStage, Pipeline, Prediction, Stage, StageKind, TensorSpec, stage

__version__ = "0.1.0"

__all__ = [
    "FunctionStage", "InvalidInput", "ModelLoadError", "ModelMetadata", "ModelNotFound", "ModelPathRefused",
    "ModelRepository", "OnnxStage", "Pipeline", "PipelineWiringError", "Prediction", "SessionConfig", "SpecError",
    "Stage", "StageFailed", "StageKind", "TensorSpec", "Workbench", "WorkbenchError", "__version__",
    "stage",
]
