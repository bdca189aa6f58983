"""The inference stage: an ONNX model from the repository, run by ONNX Runtime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.pipeline.stage import Stage, StageKind
from workbench.tensor import TensorSpec

if TYPE_CHECKING:
    from workbench.models.repository import LoadedModel, ModelRepository, Signature

__all__ = ["OnnxStage"]


class OnnxStage(Stage):
    """Run one variant of a repository model.

    The model's own input and output names are used as pipeline tensor names
    unless ``inputs``/``outputs`` map them: ``{model_name: pipeline_name}``.

    Parameters
    ----------
    model, variant
        Which model of the repository, and which of its variants.
    inputs, outputs
        Optional renaming, model tensor name to pipeline tensor name. Model
        outputs not named in ``outputs`` keep their own names.
    resource
        ``"gpu"`` asks for a GPU provider (falling back to CPU when none works).

    Examples
    --------
    >>> OnnxStage("minilm", "fp32", resource="gpu")            # doctest: +SKIP
    """

    kind = StageKind.INFERENCE
    type_name = "onnx"
    n_inputs = None
    n_outputs = None

    def __init__(
        self, model: str, variant: str, *, inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None, name: str | None = None, resource: str = "cpu",
    ) -> None:
        self.model = model
        self.variant = variant
        self.input_map = dict(inputs or {})
        self.output_map = dict(outputs or {})
        # NOTE: the tensor names are only known once the model's signature is read (bind);
        # until then the stage names the mapped ones, which is enough to describe it.
        super().__init__(
            list(self.input_map.values()) or ["?"], list(self.output_map.values()) or ["?"],
            name=name or model, resource=resource,
        )
        self.signature: Signature | None = None
        self.loaded: LoadedModel | None = None
        self._model_inputs: list[str] = []
        self._model_outputs: list[str] = []

    def bind(self, repository: ModelRepository | None, *, load: bool = True) -> None:
        if repository is None:
            raise self.wiring_error("needs a model repository")
        if load:
            self.loaded = repository.load(self.model, self.variant, self.resource)
            self.signature = self.loaded.signature
        else:
            self.signature = repository.signature(self.model, self.variant)
        self._model_inputs = [spec.name for spec in self.signature.inputs]
        self._model_outputs = [spec.name for spec in self.signature.outputs]
        for mapped, available in ((self.input_map, self._model_inputs), (self.output_map, self._model_outputs)):
            unknown = sorted(set(mapped) - set(available))
            if unknown:
                raise self.wiring_error(
                    f"model {self.model!r} has no tensor {unknown[0]!r}; its tensors are {available}"
                )
        self.inputs = tuple(self.input_map.get(n, n) for n in self._model_inputs)
        self.outputs = tuple(self.output_map.get(n, n) for n in self._model_outputs)

    @property
    def provider(self) -> str | None:
        """The execution provider the session really uses, once loaded."""
        return self.loaded.provider if self.loaded else None

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        if self.signature is None:
            raise self.wiring_error("is not bound to a repository")
        for produced, wanted in zip(inputs, self.signature.inputs):
            if produced.allow_nan:
                raise self.wiring_error("may contain NaN; put an impute stage before the model", produced.name)
            problem = wanted.mismatch(produced)
            if problem:
                raise self.wiring_error(f"{problem} by model input {wanted.name!r}", produced.name)
        return [spec.renamed(name) for spec, name in zip(self.signature.outputs, self.outputs)]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.loaded is None:
            raise RuntimeError(f"stage {self.name!r} has no loaded session")
        return tuple(self.loaded.session.run(self._model_outputs, dict(zip(self._model_inputs, arrays))))

    def with_variant(self, variant: str) -> OnnxStage:
        """The same stage on another variant of the model (unbound)."""
        return OnnxStage(self.model, variant, inputs=self.input_map, outputs=self.output_map,
                         name=self.name, resource=self.resource)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OnnxStage:
        params = {k: v for k, v in data.items() if k != "type"}
        return cls(params.pop("model"), params.pop("variant"), **params)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.type_name, "model": self.model, "variant": self.variant}
        if self.input_map:
            data["inputs"] = dict(self.input_map)
        if self.output_map:
            data["outputs"] = dict(self.output_map)
        if self.resource != "cpu":
            data["resource"] = self.resource
        return data
