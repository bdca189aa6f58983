"""Tensors on the wire between the serving process and Dask workers.

A batch travels inside a Dask comm message as raw bytes plus dtype and shape
(msgpack carries bytes as they are), which the field measurements show is the
cheapest way through Dask's comm layer. Text (object arrays of ``str``) goes
as a plain list of strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

__all__ = ["decode_error", "decode_tensors", "encode_error", "encode_tensors"]

#: Attributes of workbench errors that say where the fault is.
_ERROR_FIELDS = ("tensor", "stage")


def encode_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """``{name: {"dtype", "shape", "data" | "items"}}`` for a Dask message."""
    encoded = {}
    for name, array in tensors.items():
        if array.dtype == object:
            encoded[name] = {"dtype": "object", "shape": list(array.shape), "items": array.ravel().tolist()}
        else:
            array = np.ascontiguousarray(array)
            encoded[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.data.cast("B")}
    return encoded


def decode_tensors(encoded: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The arrays back from :func:`encode_tensors` (numeric ones are views on the received bytes)."""
    tensors = {}
    for name, item in encoded.items():
        shape = tuple(item["shape"])
        if item["dtype"] == "object":
            array = np.empty(len(item["items"]), dtype=object)
            array[:] = item["items"]
            tensors[name] = array.reshape(shape)
        else:
            tensors[name] = np.frombuffer(item["data"], dtype=np.dtype(item["dtype"])).reshape(shape)
    return tensors


def encode_error(exc: BaseException) -> dict[str, Any]:
    """A worker-side error as plain data: the caller rebuilds it (no pickled exceptions across versions)."""
    status = exc.status_code if isinstance(exc, WorkbenchError) else 500
    return {"type": type(exc).__name__, "message": str(exc), "status_code": status,
            **{key: getattr(exc, key) for key in _ERROR_FIELDS if isinstance(getattr(exc, key, None), str)}}


def decode_error(error: Mapping[str, Any]) -> WorkbenchError:
    """The :class:`WorkbenchError` for a worker-side error, keeping its kind and HTTP status."""
    from workbench import errors

    kind = getattr(errors, error["type"], None)
    if isinstance(kind, type) and issubclass(kind, WorkbenchError):
        exc = kind.__new__(kind)
        WorkbenchError.__init__(exc, error["message"], error["status_code"])
        for key in _ERROR_FIELDS:
            setattr(exc, key, error.get(key))
        return exc
    return WorkbenchError(f"{error['type']}: {error['message']}", error["status_code"])
