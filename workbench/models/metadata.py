"""The small metadata file beside each model variant (``metadata.yaml``)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workbench.errors import ModelLoadError

__all__ = ["METADATA_FILE", "ModelMetadata"]

METADATA_FILE = "metadata.yaml"


class ModelMetadata(BaseModel):
    """What a variant says about itself."""

    model_config = ConfigDict(extra="allow")

    version: int = Field(1, ge=1)
    """Increases each time the variant's file is replaced."""
    quality: dict[str, float] = Field(default_factory=dict)
    """Expected quality, by metric name (e.g. ``{"accuracy": 0.96}``), measured when built."""
    notes: str = ""
    """Free text: where the model comes from, how it was trained or converted."""
    labels: list[str] | None = None
    """Class names, for classifiers."""

    @classmethod
    def read(cls, path: Path) -> ModelMetadata:
        """Read a metadata file; a missing file gives the defaults."""
        if not path.exists():
            return cls()
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()) or {})
        except (yaml.YAMLError, ValidationError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}") from exc

    def write(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(exclude_none=True), sort_keys=False))
