"""Tensor specifications: the name, dtype and shape a stage consumes or produces.

A spec is written compactly as ``"float32[-1,30]"``: the dtype, then the shape with
``-1`` for a variable dimension (the first one is the batch). ``"str[-1]"`` is a
batch of text. A spec without brackets (``"float32"``) leaves the shape open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import InvalidInput

__all__ = ["DTYPES", "TensorSpec", "as_dtype"]

#: The dtypes a tensor may have, by canonical name. ``str`` tensors are numpy
#: object arrays of Python ``str``.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name)
    for name in (
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64",
    )
}
DTYPES["str"] = np.dtype(object)

_ALIASES = {"float": "float32", "double": "float64", "int": "int64", "string": "str", "object": "str"}
_SPEC = re.compile(r"^\s*(?P<dtype>[a-z0-9]+)\s*(?:\[(?P<shape>[-0-9,\s]*)\])?\s*$")


def as_dtype(name: str) -> str:
    """Return the canonical dtype name for ``name`` or raise ``ValueError``."""
    canonical = _ALIASES.get(name, name)
    if canonical not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    return canonical


def _dtype_name(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "OUS":
        return "str"
    return dtype.name


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """What a tensor must look like.

    Parameters
    ----------
    name
        The tensor's name in the pipeline.
    dtype
        Canonical dtype name, e.g. ``"float32"`` or ``"str"``.
    shape
        Dimensions with ``-1`` where any size goes, or ``None`` when unknown.
    allow_nan
        Whether NaN is a legal value (e.g. before an imputation stage).
    """

    name: str
    dtype: str
    shape: tuple[int, ...] | None = None
    allow_nan: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", as_dtype(self.dtype))
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @classmethod
    def parse(cls, name: str, text: str, allow_nan: bool = False) -> TensorSpec:
        """Build a spec from ``"float32[-1,30]"``-style text.

        Examples
        --------
        >>> TensorSpec.parse("x", "float32[-1,30]")
        TensorSpec(name='x', dtype='float32', shape=(-1, 30), allow_nan=False)
        """
        match = _SPEC.match(text)
        if match is None:
            raise ValueError(f"tensor {name!r}: cannot read spec {text!r}; expected e.g. 'float32[-1,30]'")
        shape_text = match["shape"]
        shape = None
        if shape_text is not None:
            shape = tuple(int(d) for d in shape_text.split(",") if d.strip())
        return cls(name, match["dtype"], shape, allow_nan)

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return DTYPES[self.dtype]

    def text(self) -> str:
        """The compact form, the inverse of :meth:`parse`."""
        if self.shape is None:
            return self.dtype
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    def renamed(self, name: str) -> TensorSpec:
        return TensorSpec(name, self.dtype, self.shape, self.allow_nan)

    def mismatch(self, produced: TensorSpec) -> str | None:
        """Why a tensor described by ``produced`` cannot feed this spec, or ``None``."""
        if produced.dtype != self.dtype:
            return f"dtype {produced.dtype} where {self.dtype} is expected"
        if self.shape is None or produced.shape is None:
            return None
        if len(produced.shape) != len(self.shape):
            return f"shape {list(produced.shape)} where {list(self.shape)} is expected"
        for have, want in zip(produced.shape, self.shape):
            if have != want and have != -1 and want != -1:
                return f"shape {list(produced.shape)} where {list(self.shape)} is expected"
        return None

    def validate(self, value: Any) -> np.ndarray:
        """Check a request value against this spec and return it as an array.

        Lossless-in-kind casts are applied (float64 to float32, bytes to str);
        anything else raises :class:`~workbench.errors.InvalidInput` naming the tensor.
        """
        array = value if isinstance(value, np.ndarray) else self._to_array(value)
        if self.dtype == "str":
            array = self._validate_text(array)
        elif array.dtype != self.numpy_dtype:
            if array.dtype.kind in "OUSV" or not np.can_cast(array.dtype, self.numpy_dtype, "same_kind"):
                raise InvalidInput(
                    f"tensor {self.name!r}: dtype {_dtype_name(array.dtype)} cannot be used as {self.dtype}",
                    self.name,
                )
            array = array.astype(self.numpy_dtype)
        self._validate_shape(array)
        if not self.allow_nan and array.dtype.kind == "f" and np.isnan(array).any():
            raise InvalidInput(f"tensor {self.name!r}: contains NaN (or null), which this input does not accept",
                               self.name)
        return array

    def _to_array(self, value: Any) -> np.ndarray:
        try:
            if self.dtype == "str":
                return np.asarray(value, dtype=object)
            return np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"tensor {self.name!r}: cannot be read as an array ({exc})", self.name) from exc

    def _validate_shape(self, array: np.ndarray) -> None:
        if array.ndim == 0:
            raise InvalidInput(f"tensor {self.name!r}: a scalar where a batch is expected", self.name)
        if array.shape[0] == 0:
            raise InvalidInput(f"tensor {self.name!r}: empty batch", self.name)
        if self.shape is None:
            return
        if array.ndim == len(self.shape):
            for have, want in zip(array.shape, self.shape):  # a loop, not any(...): no generator on every request
                if want != -1 and have != want:
                    break
            else:
                return
        raise InvalidInput(
            f"tensor {self.name!r}: shape {list(array.shape)} where {list(self.shape)} is expected", self.name
        )

    def _validate_text(self, array: np.ndarray) -> np.ndarray:
        if array.dtype.kind == "U":
            return array.astype(object)
        if array.dtype.kind != "O" and array.dtype.kind != "S":
            raise InvalidInput(
                f"tensor {self.name!r}: dtype {_dtype_name(array.dtype)} where text (str) is expected", self.name
            )
        out = array if array.dtype.kind == "O" else array.astype(object)
        flat = out if out.ndim == 1 else out.reshape(-1)
        copied = False
        for i, item in enumerate(flat):
            if isinstance(item, str):
                continue
            if isinstance(item, bytes):
                try:
                    decoded = item.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidInput(f"tensor {self.name!r}: item {i} is not valid UTF-8", self.name) from exc
                if not copied:
                    out, copied = out.copy(), True
                    flat = out.reshape(-1)
                flat[i] = decoded
                continue
            raise InvalidInput(
                f"tensor {self.name!r}: item {i} is {type(item).__name__} where text (str) is expected", self.name
            )
        return out
