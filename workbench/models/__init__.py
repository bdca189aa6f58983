"""The model repository, its metadata files and ONNX Runtime sessions."""

from __future__ import annotations

from workbench.models.convert import from_sklearn, from_torch
from workbench.models.importing import add_model
from workbench.models.metadata import ModelMetadata
from workbench.models.repository import LoadedModel, ModelRepository, Signature
from workbench.models.session import SessionConfig, usable_providers

__all__ = [
    "LoadedModel", "ModelMetadata", "ModelRepository", "SessionConfig", "Signature", "add_model", "from_sklearn",
    "from_torch", "usable_providers",
]
