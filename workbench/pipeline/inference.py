"""The inference stage: an ONNX model from the repository, run by ONNX Runtime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
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
    ragged_by
        The model input that masks padding (``attention_mask``) of sequences padded
        to the longest of the batch. A batch of more than ``bucket_rows`` rows then
        runs in buckets of rows of similar length, each cut to its own longest
        sequence, so the model computes less padding (MiniLM, batches of 28 on one
        core: 3.5-4.7 % more sentences a second, with this corpus's similar lengths).
        Every input of the mask's batch and sequence shape is cut alike; the outputs
        must vary in the batch dimension only (a pooled embedding, not per token).
    bucket_rows
        Most rows in one bucket (buckets of a batch are made as even as possible).

    Examples
    --------
    >>> OnnxStage("minilm", "fp32", resource="gpu", ragged_by="attention_mask")  # doctest: +SKIP
    """

    kind = StageKind.INFERENCE
    type_name = "onnx"
    n_inputs = None
    n_outputs = None

    def __init__(
        self, model: str, variant: str, *, inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None, name: str | None = None, resource: str = "cpu",
        ragged_by: str | None = None, bucket_rows: int = 16,
    ) -> None:
        if not isinstance(bucket_rows, int) or isinstance(bucket_rows, bool) or bucket_rows < 1:
            raise ValueError(f"stage {name or model!r}: bucket_rows must be an integer >= 1, not {bucket_rows!r}")
        self.model = model
        self.variant = variant
        self.ragged_by = ragged_by
        self.bucket_rows = bucket_rows
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
        self._row_by_row = False

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
        # NOTE: a model exported with a batch axis fixed at 1 still serves batches: one run per row.
        self._row_by_row = any(spec.shape and spec.shape[0] == 1 for spec in self.signature.inputs)
        if self.ragged_by is not None:
            self._check_ragged(self.signature)

    def _check_ragged(self, signature: Signature) -> None:
        """``ragged_by`` must name a model input of shape [batch, sequence].

        NOTE: that the outputs vary in the batch dimension only is checked as buckets run: a model file
        often leaves an output dimension symbolic that ONNX Runtime's shape inference then fixes.
        """
        mask = next((spec for spec in signature.inputs if spec.name == self.ragged_by), None)
        if mask is None or mask.shape is None or len(mask.shape) != 2:
            raise self.wiring_error(f"ragged_by {self.ragged_by!r} must name a model input of shape [batch, "
                                    f"sequence]; the model's inputs are {self._model_inputs}")

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
        outputs = [spec.renamed(name) for spec, name in zip(self.signature.outputs, self.outputs)]
        if self._row_by_row:
            outputs = [replace(spec, shape=(-1, *spec.shape[1:])) if spec.shape else spec for spec in outputs]
        return outputs

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.loaded is None:
            raise RuntimeError(f"stage {self.name!r} has no loaded session")
        feed = dict(zip(self._model_inputs, arrays))
        if self.ragged_by is not None and len(arrays[0]) > self.bucket_rows:
            return self._run_in_buckets(feed)
        if self._row_by_row and len(arrays[0]) > 1:
            rows = [self.loaded.session.run(self._model_outputs, {n: a[i:i + 1] for n, a in feed.items()})
                    for i in range(len(arrays[0]))]
            return tuple(np.concatenate(parts) for parts in zip(*rows))
        return tuple(self.loaded.session.run(self._model_outputs, feed))

    def _run_in_buckets(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """Run rows of similar length together, each bucket cut to its longest row; outputs in the rows' order."""
        assert self.loaded is not None and self.ragged_by is not None
        mask = feed[self.ragged_by]
        rows, width = mask.shape
        # NOTE: a row's length runs to its last unmasked position, so padding on either side stays correct
        # (left padding simply gains nothing).
        unmasked = mask != 0
        lengths = np.where(unmasked.any(axis=1), width - np.argmax(unmasked[:, ::-1], axis=1), 1)
        order = np.argsort(lengths, kind="stable")
        cut = [name for name, array in feed.items() if array.shape[:2] == mask.shape]
        buckets = -(-rows // self.bucket_rows)
        per_bucket = -(-rows // buckets)
        outputs: list[np.ndarray] | None = None
        for start in range(0, rows, per_bucket):
            picked = order[start:start + per_bucket]
            longest = int(lengths[picked[-1]])
            part = {name: array[picked, :longest] if name in cut else array[picked] for name, array in feed.items()}
            results = self.loaded.session.run(self._model_outputs, part)
            if outputs is None:
                outputs = [np.empty((rows, *r.shape[1:]), dtype=r.dtype) for r in results]
            for name, whole, result in zip(self._model_outputs, outputs, results):
                if result.shape[1:] != whole.shape[1:]:
                    raise self.wiring_error(
                        f"ragged_by needs outputs that vary in the batch dimension only, but output {name!r} is "
                        f"{list(whole.shape[1:])} in one bucket and {list(result.shape[1:])} in another (a "
                        "per-token output changes with each bucket's length)")
                whole[picked] = result
        assert outputs is not None
        return tuple(outputs)

    def with_variant(self, variant: str) -> OnnxStage:
        """The same stage on another variant of the model (unbound)."""
        return OnnxStage(self.model, variant, inputs=self.input_map, outputs=self.output_map,
                         name=self.name, resource=self.resource, ragged_by=self.ragged_by,
                         bucket_rows=self.bucket_rows)

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
        if self.ragged_by is not None:
            data["ragged_by"] = self.ragged_by
            data["bucket_rows"] = self.bucket_rows
        return data
