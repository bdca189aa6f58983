"""Built-in feature stages: dimensionality reduction and aggregation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from workbench.pipeline.stage import Stage, StageKind, as_float_vector
from workbench.tensor import TensorSpec

__all__ = ["Aggregate", "PCAProjection"]

_REDUCERS: dict[str, Callable[..., Any]] = {"mean": np.mean, "sum": np.sum, "max": np.max, "min": np.min}


class PCAProjection(Stage):
    """Project rows onto fitted principal components: ``(x - mean) @ components.T``."""

    kind = StageKind.FEATURES
    type_name = "pca"

    def __init__(
        self, input: str, output: str, *, mean: Sequence[float], components: Sequence[Sequence[float]],
        name: str | None = None,
    ) -> None:
        super().__init__(input, output, name=name)
        self.mean = as_float_vector(mean, "pca mean")
        self.components = np.asarray(components, dtype=np.float32)
        if self.components.ndim != 2 or self.components.shape[1] != self.mean.size:
            raise ValueError("pca components must be a (k, n_features) matrix matching the mean")
        self._projection = np.ascontiguousarray(self.components.T)

    @classmethod
    def fit(
        cls, reference: np.ndarray, *, input: str, output: str, n_components: int, name: str | None = None
    ) -> PCAProjection:
        """Fit the top ``n_components`` directions of the reference rows (SVD)."""
        reference = np.asarray(reference, dtype=np.float64)
        if not 1 <= n_components <= min(reference.shape):
            raise ValueError(f"n_components must be between 1 and {min(reference.shape)}")
        mean = reference.mean(axis=0)
        _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
        return cls(input, output, mean=mean.tolist(), components=vt[:n_components].tolist(), name=name)

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        (spec,) = inputs
        self.expect(spec, kinds="f", ndim=2, nan_ok=False)
        self.expect_width(spec, self.mean.size)
        return [TensorSpec(self.outputs[0], "float32", (-1, self.components.shape[0]))]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return (((arrays[0] - self.mean) @ self._projection).astype(np.float32, copy=False),)

    def params(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "components": self.components.tolist()}


class Aggregate(Stage):
    """Combine tensors element-wise (several inputs) or reduce one along an axis.

    With several inputs of one shape (e.g. the probabilities of two models)
    the result is their element-wise ``op``; with one input it is ``op`` over
    ``axis`` (default 1: across columns).
    """

    kind = StageKind.FEATURES
    type_name = "aggregate"
    n_inputs = None

    def __init__(
        self, inputs: Sequence[str], output: str, *, op: str = "mean", axis: int = 1, name: str | None = None
    ) -> None:
        super().__init__(inputs, output, name=name)
        if op not in _REDUCERS:
            raise ValueError(f"aggregate op must be one of {sorted(_REDUCERS)}, not {op!r}")
        if len(self.inputs) == 1 and axis == 0:
            raise ValueError("aggregate axis must not be 0: that is the batch")
        self.op = op
        self.axis = int(axis)
        self._reduce = _REDUCERS[op]
        self._dtype = np.dtype(np.float32)

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        first = inputs[0]
        for spec in inputs:
            self.expect(spec, kinds="fiu", nan_ok=False)
            problem = first.mismatch(spec)
            if problem:
                raise self.wiring_error(f"{problem} (all inputs must match {first.name!r})", spec.name)
        dtype = first.dtype if first.numpy_dtype.kind == "f" or self.op != "mean" else "float32"
        self._dtype = np.dtype(dtype)
        if len(inputs) > 1:
            return [TensorSpec(self.outputs[0], dtype, first.shape)]
        shape = None
        if first.shape is not None:
            if not 0 < self.axis < len(first.shape):
                raise self.wiring_error(f"axis {self.axis} is out of range for shape {list(first.shape)}", first.name)
            shape = first.shape[: self.axis] + first.shape[self.axis + 1 :]
        return [TensorSpec(self.outputs[0], dtype, shape)]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        stacked = len(arrays) > 1
        result = self._reduce(np.stack(arrays), axis=0) if stacked else self._reduce(arrays[0], axis=self.axis)
        return (np.asarray(result).astype(self._dtype, copy=False),)

    def params(self) -> dict[str, Any]:
        return {"op": self.op, "axis": self.axis} if len(self.inputs) == 1 else {"op": self.op}
