"""Built-in pre-processing stages: impute, clip, scale, encode, tokenise.

The numeric stages work on a 2-d float batch (rows by features) and are fitted
from reference data with ``Stage.fit(reference, ...)``; their fitted values are
plain lists in a pipeline file, so a fitted pipeline round-trips through YAML.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from workbench.pipeline.stage import Stage, StageKind, as_float_vector
from workbench.tensor import TensorSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from workbench.models.repository import ModelRepository

__all__ = ["Clip", "Impute", "MinMaxScale", "OneHot", "Ordinal", "Standardize", "Tokenize"]

_IMPUTE_STRATEGIES = ("mean", "median", "constant")


class _ColumnStage(Stage):
    """A fitted stage over a float matrix that keeps its shape."""

    kind = StageKind.PREPROCESS
    #: Whether NaN passes through this stage untouched (so NaN may come in).
    nan_passes: ClassVar[bool] = True

    def __init__(self, input: str, output: str, *, width: int, name: str | None = None) -> None:
        super().__init__(input, output, name=name)
        self.width = width

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        (spec,) = inputs
        self.expect(spec, kinds="f", ndim=2, nan_ok=self.nan_passes)
        self.expect_width(spec, self.width)
        return [TensorSpec(self.outputs[0], "float32", (-1, self.width), allow_nan=spec.allow_nan)]


class Impute(_ColumnStage):
    """Replace NaN by a fitted value per column (mean, median or a constant).

    Examples
    --------
    >>> stage = Impute.fit(np.array([[1.0, np.nan], [3.0, 4.0]]), input="x", output="x_filled")
    >>> stage.run(np.array([[np.nan, np.nan]], dtype=np.float32))[0].tolist()
    [[2.0, 4.0]]
    """

    type_name = "impute"

    def __init__(
        self, input: str, output: str, *, values: Sequence[float], strategy: str = "constant", name: str | None = None
    ) -> None:
        if strategy not in _IMPUTE_STRATEGIES:
            raise ValueError(f"impute strategy must be one of {_IMPUTE_STRATEGIES}, not {strategy!r}")
        self.values = as_float_vector(values, "impute values")
        if np.isnan(self.values).any():
            raise ValueError("impute values must not be NaN (a reference column was all NaN?)")
        self.strategy = strategy
        super().__init__(input, output, width=self.values.size, name=name)

    @classmethod
    def fit(
        cls, reference: np.ndarray, *, input: str, output: str, strategy: str = "median",
        fill_value: float = 0.0, name: str | None = None,
    ) -> Impute:
        """Fit the per-column fill values from reference rows (NaN ignored)."""
        reference = np.asarray(reference, dtype=np.float64)
        if strategy == "mean":
            values = np.nanmean(reference, axis=0)
        elif strategy == "median":
            values = np.nanmedian(reference, axis=0)
        else:
            values = np.full(reference.shape[1], fill_value)
        return cls(input, output, values=values.tolist(), strategy=strategy, name=name)

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        (spec,) = super().output_specs(inputs)
        return [TensorSpec(spec.name, spec.dtype, spec.shape, allow_nan=False)]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        x = arrays[0].astype(np.float32, copy=False)
        missing = np.isnan(x)
        if not missing.any():
            return (x,)
        return (np.where(missing, self.values, x).astype(np.float32, copy=False),)

    def params(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "values": self.values.tolist()}


class Clip(_ColumnStage):
    """Clip anomalies to per-column bounds, fitted as reference percentiles."""

    type_name = "clip"

    def __init__(
        self, input: str, output: str, *, lower: Sequence[float], upper: Sequence[float], name: str | None = None
    ) -> None:
        self.lower = as_float_vector(lower, "clip lower")
        self.upper = as_float_vector(upper, "clip upper")
        if self.lower.shape != self.upper.shape or (self.lower > self.upper).any():
            raise ValueError("clip lower and upper must have the same length and lower <= upper")
        super().__init__(input, output, width=self.lower.size, name=name)

    @classmethod
    def fit(
        cls, reference: np.ndarray, *, input: str, output: str, percentiles: tuple[float, float] = (0.5, 99.5),
        name: str | None = None,
    ) -> Clip:
        """Fit bounds as the given reference percentiles per column (NaN ignored)."""
        low, high = np.nanpercentile(np.asarray(reference, dtype=np.float64), percentiles, axis=0)
        return cls(input, output, lower=low.tolist(), upper=high.tolist(), name=name)

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return (np.clip(arrays[0], self.lower, self.upper).astype(np.float32, copy=False),)

    def params(self) -> dict[str, Any]:
        return {"lower": self.lower.tolist(), "upper": self.upper.tolist()}


class Standardize(_ColumnStage):
    """Centre and scale each column: ``(x - mean) / scale``."""

    type_name = "standardize"

    def __init__(
        self, input: str, output: str, *, mean: Sequence[float], scale: Sequence[float], name: str | None = None
    ) -> None:
        self.mean = as_float_vector(mean, "standardize mean")
        self.scale = as_float_vector(scale, "standardize scale")
        if self.mean.shape != self.scale.shape or (self.scale == 0).any():
            raise ValueError("standardize mean and scale must have the same length and scale must be non-zero")
        self._inverse = (1.0 / self.scale).astype(np.float32)
        super().__init__(input, output, width=self.mean.size, name=name)

    @classmethod
    def fit(cls, reference: np.ndarray, *, input: str, output: str, name: str | None = None) -> Standardize:
        """Fit mean and standard deviation per column (NaN ignored; constant columns keep scale 1)."""
        reference = np.asarray(reference, dtype=np.float64)
        std = np.nanstd(reference, axis=0)
        return cls(input, output, mean=np.nanmean(reference, axis=0).tolist(),
                   scale=np.where(std > 0, std, 1.0).tolist(), name=name)

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return (((arrays[0] - self.mean) * self._inverse).astype(np.float32, copy=False),)

    def params(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}


class MinMaxScale(_ColumnStage):
    """Scale each column linearly so the fitted minimum maps to 0 and maximum to 1."""

    type_name = "minmax"

    def __init__(
        self, input: str, output: str, *, minimum: Sequence[float], maximum: Sequence[float], name: str | None = None
    ) -> None:
        self.minimum = as_float_vector(minimum, "minmax minimum")
        self.maximum = as_float_vector(maximum, "minmax maximum")
        if self.minimum.shape != self.maximum.shape or (self.maximum < self.minimum).any():
            raise ValueError("minmax minimum and maximum must have the same length and minimum <= maximum")
        span = self.maximum - self.minimum
        self._inverse = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 1.0).astype(np.float32)
        super().__init__(input, output, width=self.minimum.size, name=name)

    @classmethod
    def fit(cls, reference: np.ndarray, *, input: str, output: str, name: str | None = None) -> MinMaxScale:
        """Fit the minimum and maximum per column (NaN ignored)."""
        reference = np.asarray(reference, dtype=np.float64)
        return cls(input, output, minimum=np.nanmin(reference, axis=0).tolist(),
                   maximum=np.nanmax(reference, axis=0).tolist(), name=name)

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return (((arrays[0] - self.minimum) * self._inverse).astype(np.float32, copy=False),)

    def params(self) -> dict[str, Any]:
        return {"minimum": self.minimum.tolist(), "maximum": self.maximum.tolist()}


class _CategoricalStage(Stage):
    """A stage over a 2-d batch of categorical columns (text or integers)."""

    kind = StageKind.PREPROCESS

    def __init__(
        self, input: str, output: str, *, categories: Sequence[Sequence[Any]], name: str | None = None
    ) -> None:
        super().__init__(input, output, name=name)
        if not categories or not all(len(column) for column in categories):
            raise ValueError(f"stage {self.name!r}: categories must be a non-empty list per column")
        self.categories = [list(column) for column in categories]
        self._codes = [{value: code for code, value in enumerate(column)} for column in self.categories]

    @classmethod
    def fit(cls, reference: np.ndarray, *, input: str, output: str, name: str | None = None) -> Any:
        """Take each column's categories, sorted, from reference rows."""
        reference = np.asarray(reference, dtype=object)
        categories = [sorted({_plain(v) for v in reference[:, j]}, key=_order) for j in range(reference.shape[1])]
        return cls(input, output, categories=categories, name=name)

    def check_input(self, inputs: Sequence[TensorSpec]) -> TensorSpec:
        (spec,) = inputs
        self.expect(spec, kinds="iuU", ndim=2)
        self.expect_width(spec, len(self.categories))
        return spec

    def codes(self, x: np.ndarray) -> np.ndarray:
        """Integer code per cell, -1 for a category not seen when fitting."""
        codes = np.empty(x.shape, dtype=np.int64)
        for j, lookup in enumerate(self._codes):
            codes[:, j] = [lookup.get(_plain(v), -1) for v in x[:, j]]
        return codes

    def params(self) -> dict[str, Any]:
        return {"categories": self.categories}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _order(value: Any) -> tuple[int, Any]:
    """Numbers by value, then text (as scikit-learn orders categories)."""
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


class OneHot(_CategoricalStage):
    """One-hot encode categorical columns; an unseen category encodes as all zeros."""

    type_name = "onehot"

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        self.check_input(inputs)
        return [TensorSpec(self.outputs[0], "float32", (-1, sum(len(c) for c in self.categories)))]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        codes = self.codes(arrays[0])
        out = np.zeros((codes.shape[0], sum(len(c) for c in self.categories)), dtype=np.float32)
        offset = 0
        rows = np.arange(codes.shape[0])
        for j, column in enumerate(self.categories):
            known = codes[:, j] >= 0
            out[rows[known], offset + codes[known, j]] = 1.0
            offset += len(column)
        return (out,)


class Ordinal(_CategoricalStage):
    """Encode categorical columns as their index in the fitted categories; unseen is -1."""

    type_name = "ordinal"

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        self.check_input(inputs)
        return [TensorSpec(self.outputs[0], "float32", (-1, len(self.categories)))]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self.codes(arrays[0]).astype(np.float32),)


class Tokenize(Stage):
    """Tokenise a batch of text with a ``tokenizers`` ``tokenizer.json``.

    Pads to the longest item of the batch (never to a fixed length: padding
    costs more than batching saves on transformer models) and truncates at
    ``max_length``. Outputs ``input_ids``, ``attention_mask`` and
    ``token_type_ids`` (int64, batch by sequence) under the names given.

    Parameters
    ----------
    tokenizer
        Path of the ``tokenizer.json``, relative to the model repository root.
    """

    kind = StageKind.PREPROCESS
    type_name = "tokenize"
    n_outputs = 3

    def __init__(
        self, input: str, outputs: Sequence[str] = ("input_ids", "attention_mask", "token_type_ids"), *,
        tokenizer: str, max_length: int = 256, name: str | None = None,
    ) -> None:
        super().__init__(input, outputs, name=name)
        if max_length < 2:
            raise ValueError("max_length must be an integer >= 2")
        self.tokenizer_path = tokenizer
        self.max_length = int(max_length)
        self._tokenizer: Tokenizer | None = None
        self._encode: Callable[[list[str]], list[Any]]

    def bind(self, repository: ModelRepository | None, *, load: bool = True) -> None:
        from tokenizers import Tokenizer

        # NOTE: ONNX Runtime's thread pool already uses every core for the model that follows;
        # tokenizers' own pool would compete with it (measured: about 3% of throughput at batch 32).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if repository is None:
            raise self.wiring_error("needs a model repository to find its tokenizer file")
        path = repository.asset(self.tokenizer_path)
        if not load:
            return
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.enable_padding(length=None)
        tokenizer.enable_truncation(self.max_length)
        self._tokenizer = tokenizer
        # NOTE: encode_batch_fast skips character offsets, which no stage uses (tokenizers >= 0.20).
        self._encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    def output_specs(self, inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        (spec,) = inputs
        self.expect(spec, kinds="U", ndim=1)
        return [TensorSpec(name, "int64", (-1, -1)) for name in self.outputs]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        if self._tokenizer is None:
            raise RuntimeError(f"stage {self.name!r} is not bound to a repository")
        encodings = self._encode(arrays[0].tolist())
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return ids, mask, types

    def params(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer_path, "max_length": self.max_length}
