"""Settings of the workbench, read from ``WORKBENCH_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from workbench.models.session import SessionConfig

__all__ = ["WorkbenchSettings"]


class WorkbenchSettings(BaseSettings):
    """Where the workbench keeps its files and how it creates sessions.

    Every field can be set by an environment variable with the ``WORKBENCH_``
    prefix, e.g. ``WORKBENCH_HOME=/data/workbench``.
    """

    model_config = SettingsConfigDict(env_prefix="WORKBENCH_", extra="ignore")

    home: Path = Path(".workbench")
    """Folder holding the model repository (``models/``) and pipeline files (``pipelines/``)."""
    intra_op_threads: int | None = Field(None, ge=1)
    """ONNX Runtime threads per session; unset lets ONNX Runtime use every core."""
    inter_op_threads: int | None = Field(None, ge=1)
    """ONNX Runtime threads across independent graph nodes; unset lets ONNX Runtime choose."""
    device: str = Field("auto", pattern="^(auto|cpu|gpu)$")
    """``auto``: GPU for stages that ask for it when a GPU works; ``cpu``: never; ``gpu``: every model."""

    @property
    def repository_dir(self) -> Path:
        return self.home / "models"

    @property
    def pipelines_dir(self) -> Path:
        return self.home / "pipelines"

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            intra_op_threads=self.intra_op_threads, inter_op_threads=self.inter_op_threads, device=self.device
        )
