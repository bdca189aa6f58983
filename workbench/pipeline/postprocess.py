"""Built-in post-processing stages: labels, top-k, thresholds, confidence buckets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.pipeline.stage import Stage, StageKind
from workbench.tensor import TensorSpec

__all__ = ["ConfidenceBuckets", "LabelMap", "Threshold", "TopK"]


class _ScoreStage(Stage):
    """A stage that reads one score per row: a 1-d tensor, or one column of a 2-d one."""

    kind = StageKind.POSTPROCESS

    def __init__(
        self, input: str, outputs: Sequence[str] | str, *, column: int | None = None, name: str | None = None
    ) -> None:
        super().__init__(input, outputs, name=name)
        self.column = None if column is None else int(column)

    def check_scores(self, inputs: Sequence[TensorSpec]) -> None:
        (spec,) = inputs
        self.expect(spec, kinds="f", ndim=1 if self.column is None else 2, nan_ok=False)
        if self.column is not None and spec.shape is not None and spec.shape[1] != -1 and not (
            -spec.shape[1] <= self.column < spec.shape[1]
        ):
            raise self.wiring_error(f"column {self.column} is out of range for shape {list(spec.shape)}", spec.name)

    def scores(self, x: np.ndarray) -> np.ndarray:
        return x if self.column is None else x[:, self.column]

    def params(self) -> dict[str, Any]:
        return {} if self.column is None else {"column": self.column}


class LabelMap(_ScoreStage):
    """Map class scores (batch by classes) or class indices to label names.

    With two outputs the second is the confidence: the highest score of the row.
    """

    type_name = "labels"
    n_outputs = None

    def __init__(
        self, input: str, outputs: Sequence[str] | str, *, labels: Sequence[str], name: str | None = None
    ) -> None:
        super().__init__(input, outputs, name=name)
        if len(self.outputs) > 2:
            raise self.wiring_error("writes a label and, optionally, a confidence: at most 2 outputs")
        if not labels:
            raise ValueError("labels must be a non-empty list")
        self.labels = [str(label) for label in labels]
        self._lookup = np.array(self.labels, dtype=object)

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        (spec,) = inputs
        self.expect(spec, kinds="fiu", nan_ok=False)
        is_scores = spec.numpy_dtype.kind == "f"
        if spec.shape is not None:
            expected_rank = 2 if is_scores else 1
            if len(spec.shape) != expected_rank:
                raise self.wiring_error(
                    f"shape {list(spec.shape)}: expected scores [-1, n_labels] or indices [-1]", spec.name
                )
            if is_scores and spec.shape[1] not in (-1, len(self.labels)):
                raise self.wiring_error(f"{spec.shape[1]} classes but {len(self.labels)} labels", spec.name)
        if not is_scores and len(self.outputs) == 2:
            raise self.wiring_error("a confidence needs scores, not class indices", spec.name)
        specs = [TensorSpec(self.outputs[0], "str", (-1,))]
        if len(self.outputs) == 2:
            specs.append(TensorSpec(self.outputs[1], spec.dtype, (-1,)))
        return specs

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        (x,) = arrays
        if x.dtype.kind != "f":
            if x.size and (x.min() < 0 or x.max() >= len(self.labels)):
                raise ValueError(f"class index out of range 0..{len(self.labels) - 1}")
            return (self._lookup[x],)
        if len(x) == 1:
            # NOTE: one row (a real-time request): scalar steps take half the time of the batch path right after
            # a model run, when the interpreter's and numpy's caches are cold.
            best = int(x[0].argmax())
            labels, confidence = self._lookup[best:best + 1].copy(), x[0, best:best + 1]
        else:
            index = x.argmax(axis=1)
            labels, confidence = self._lookup.take(index), x[np.arange(len(x)), index]
        return (labels,) if len(self.outputs) == 1 else (labels, confidence)

    def params(self) -> dict[str, Any]:
        return {"labels": self.labels}


class TopK(Stage):
    """The ``k`` highest scores of each row and their indices, best first."""

    kind = StageKind.POSTPROCESS
    type_name = "topk"
    n_outputs = 2

    def __init__(self, input: str, outputs: Sequence[str] = ("topk_indices", "topk_scores"), *, k: int,
                 name: str | None = None) -> None:
        super().__init__(input, outputs, name=name)
        if int(k) < 1:
            raise ValueError("k must be an integer >= 1")
        self.k = int(k)

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        (spec,) = inputs
        self.expect(spec, kinds="fiu", ndim=2, nan_ok=False)
        if spec.shape is not None and spec.shape[1] != -1 and spec.shape[1] < self.k:
            raise self.wiring_error(f"k={self.k} but only {spec.shape[1]} columns", spec.name)
        return [
            TensorSpec(self.outputs[0], "int64", (-1, self.k)),
            TensorSpec(self.outputs[1], spec.dtype, (-1, self.k)),
        ]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        (x,) = arrays
        # NOTE: negate in a signed type (unsigned would wrap) and sort stably: ties keep column order.
        keys = -(x.astype(np.int64) if x.dtype.kind == "u" else x)
        indices = np.argsort(keys, axis=1, kind="stable")[:, : self.k].astype(np.int64, copy=False)
        return indices, np.take_along_axis(x, indices, axis=1)

    def params(self) -> dict[str, Any]:
        return {"k": self.k}


class Threshold(_ScoreStage):
    """A boolean decision per row: score ``>= threshold``."""

    type_name = "threshold"

    def __init__(self, input: str, output: str, *, threshold: float, column: int | None = None,
                 name: str | None = None) -> None:
        super().__init__(input, output, column=column, name=name)
        self.threshold = float(threshold)

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        self.check_scores(inputs)
        return [TensorSpec(self.outputs[0], "bool", (-1,))]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self.scores(arrays[0]) >= self.threshold,)

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, **super().params()}


class ConfidenceBuckets(_ScoreStage):
    """Name the bucket a score falls in: ``edges`` split the line into ``len(edges) + 1`` named buckets.

    Examples
    --------
    >>> stage = ConfidenceBuckets("risk", "bucket", edges=[0.2, 0.6], labels=["low", "medium", "high"])
    >>> stage.run(np.array([0.1, 0.5, 0.9]))[0].tolist()
    ['low', 'medium', 'high']
    """

    type_name = "buckets"

    def __init__(self, input: str, output: str, *, edges: Sequence[float], labels: Sequence[str],
                 column: int | None = None, name: str | None = None) -> None:
        super().__init__(input, output, column=column, name=name)
        self.edges = [float(e) for e in edges]
        if not self.edges or any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError("bucket edges must be a non-empty, strictly increasing list")
        if len(labels) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges make {len(self.edges) + 1} buckets, got {len(labels)} labels")
        self.labels = [str(label) for label in labels]
        self._lookup = np.array(self.labels, dtype=object)

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        self.check_scores(inputs)
        return [TensorSpec(self.outputs[0], "str", (-1,))]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        scores = self.scores(arrays[0])
        # NOTE: compare in the scores' own dtype, as Threshold does (0.7 in float32 is not 0.7 in float64).
        return (self._lookup[np.searchsorted(np.asarray(self.edges, dtype=scores.dtype), scores, side="right")],)

    def params(self) -> dict[str, Any]:
        return {"edges": self.edges, "labels": self.labels, **super().params()}
