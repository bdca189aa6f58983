"""Tensors of the Open Inference Protocol (KServe V2) to and from numpy.

Two encodings of a tensor: JSON (``data`` as a row-major flat list) and the
binary tensor data extension (``parameters.binary_data_size``: raw
little-endian bytes appended after the JSON header, whose length the
``Inference-Header-Content-Length`` HTTP header gives; BYTES elements are
each prefixed by their 4-byte little-endian length). Every problem is an
:class:`~workbench.errors.InvalidInput` naming the tensor.

JSON ``NaN``, ``Infinity`` and ``-Infinity`` are read as Triton reads them
(clients such as ``tritonclient`` write them for missing values), although
strict JSON has no such numbers.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from types import NoneType
from typing import Any

import numpy as np
import orjson

from workbench.errors import InvalidInput

__all__ = ["DATATYPES", "decode_request", "encode_response", "v2_datatype"]

#: V2 datatype -> numpy dtype (BYTES: object arrays of str).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype("uint8"), "UINT16": np.dtype("uint16"),
    "UINT32": np.dtype("uint32"), "UINT64": np.dtype("uint64"), "INT8": np.dtype("int8"),
    "INT16": np.dtype("int16"), "INT32": np.dtype("int32"), "INT64": np.dtype("int64"),
    "FP16": np.dtype("float16"), "FP32": np.dtype("float32"), "FP64": np.dtype("float64"),
    "BYTES": np.dtype(object),
}
_BY_NUMPY = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}
#: The header that splits a binary request or response into JSON and tensor bytes.
HEADER_LENGTH = "inference-header-content-length"


def v2_datatype(dtype: np.dtype[Any] | str) -> str:
    """The V2 datatype of a numpy dtype (or of a workbench dtype name such as ``"str"``)."""
    if isinstance(dtype, str):
        dtype = np.dtype(object) if dtype == "str" else np.dtype(dtype)
    if dtype.kind in "OUS":
        return "BYTES"
    return _BY_NUMPY[dtype]


# -- requests ---------------------------------------------------------------------------
def decode_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Split and parse a request body; return the JSON header and the input arrays by name."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER_LENGTH} must be an integer, not {header_length!r}") from None
        if not 0 <= split <= len(body):
            raise InvalidInput(f"{HEADER_LENGTH} is {split} but the body has {len(body)} bytes")
        header, binary = body[:split], memoryview(body)[split:]
    else:
        header, binary = body, memoryview(b"")
    request = _parse_json(header)
    if not isinstance(request, dict):
        raise InvalidInput("the request body must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for item in inputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput("every input needs a 'name'")
        name = item["name"]
        if name in tensors:
            raise InvalidInput(f"input tensor {name!r} is given twice", name)
        shape, dtype = _shape_and_dtype(item)
        size = _binary_size(item)
        if size is not None:
            if offset + size > len(binary):
                raise InvalidInput(f"tensor {name!r}: binary_data_size {size} runs past the end of the body", name)
            tensors[name] = _from_binary(name, binary[offset:offset + size], shape, item["datatype"], dtype)
            offset += size
        else:
            tensors[name] = _from_json(name, item.get("data"), shape, item["datatype"], dtype)
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data follow the last binary input")
    return request, tensors


def _parse_json(header: bytes) -> Any:
    try:
        return orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        error = exc
    # NOTE: orjson refuses the non-finite numbers that V2 clients write, so only a request orjson
    # refused takes the slower standard parser. orjson's dumps then refuses what orjson would not
    # have read either (lone surrogates, integers beyond 64 bits, very deep nesting).
    try:
        request = json.loads(header)
        orjson.dumps(request)
    except (ValueError, TypeError, RecursionError, orjson.JSONEncodeError):
        raise InvalidInput(f"malformed JSON: {error}") from None
    return request


def _shape_and_dtype(item: Mapping[str, Any]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    name = item["name"]
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise InvalidInput(f"tensor {name!r}: 'shape' must be a list of non-negative integers, not {shape!r}", name)
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(f"tensor {name!r}: unknown datatype {datatype!r}; expected one of {sorted(DATATYPES)}",
                           name)
    return tuple(shape), DATATYPES[datatype]


def _binary_size(item: Mapping[str, Any]) -> int | None:
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"tensor {item['name']!r}: 'parameters' must be an object", item["name"])
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"tensor {item['name']!r}: binary_data_size must be a non-negative integer", item["name"])
    return size


def _count(shape: Sequence[int]) -> int:
    # NOTE: exact, unlike a product in int64, which a shape such as [2**32, 2**32] wraps to 0.
    return math.prod(shape)


def _from_json(name: str, data: Any, shape: tuple[int, ...], datatype: str, dtype: np.dtype[Any]) -> np.ndarray:
    if data is None:
        raise InvalidInput(f"tensor {name!r}: no 'data' and no binary_data_size", name)
    flat = _flatten(data)
    if len(flat) != _count(shape):
        raise InvalidInput(f"tensor {name!r}: shape {list(shape)} holds {_count(shape)} elements but 'data' has "
                           f"{len(flat)}", name)
    # NOTE: the values come from a JSON parser, so their types are exactly str, int, float, bool, None, list
    # or dict (and a bool is no int): one set of their types checks them all at C speed.
    types = set(map(type, flat))
    if datatype == "BYTES":
        if not types <= {str}:
            raise InvalidInput(f"tensor {name!r}: BYTES data must be strings", name)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if datatype == "BOOL":
        if not types <= {bool}:
            raise InvalidInput(f"tensor {name!r}: BOOL data must be true or false", name)
    elif dtype.kind == "f" and NoneType in types:
        # NOTE: pandas' to_json writes a missing value as null; as a float it is NaN, which the pipeline's
        # input spec then accepts (allow_nan) or refuses, naming the tensor.
        if not types <= {int, float, NoneType}:
            raise InvalidInput(f"tensor {name!r}: {datatype} data must be numbers or null", name)
    elif not types <= {int, float}:
        raise InvalidInput(f"tensor {name!r}: {datatype} data must be numbers", name)
    elif dtype.kind in "iu" and not types <= {int}:
        raise InvalidInput(f"tensor {name!r}: {datatype} data must be integers", name)
    try:
        # NOTE: 1e300 as FP32 would otherwise become inf with only a warning.
        with np.errstate(over="raise"):
            return np.asarray(flat, dtype=dtype).reshape(shape)
    except (ArithmeticError, ValueError) as exc:
        raise InvalidInput(f"tensor {name!r}: data does not fit {datatype} ({exc})", name) from None


def _flatten(data: Any) -> list[Any]:
    """Row-major elements of a flat or nested list (both are seen from V2 clients)."""
    if not isinstance(data, list):
        return [data]
    if list not in set(map(type, data)):
        return data
    # NOTE: a loop, not recursion: orjson reads lists nested 1024 deep, past Python's recursion limit.
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _from_binary(name: str, raw: memoryview, shape: tuple[int, ...], datatype: str,
                 dtype: np.dtype[Any]) -> np.ndarray:
    count = _count(shape)
    if datatype != "BYTES":
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise InvalidInput(f"tensor {name!r}: shape {list(shape)} of {datatype} needs {expected} bytes but "
                               f"binary_data_size is {len(raw)}", name)
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    items: list[str] = []
    position = 0
    while position < len(raw):
        if position + 4 > len(raw):
            raise InvalidInput(f"tensor {name!r}: BYTES element length cut short", name)
        (length,) = struct.unpack_from("<I", raw, position)
        position += 4
        if position + length > len(raw):
            raise InvalidInput(f"tensor {name!r}: BYTES element runs past binary_data_size", name)
        try:
            items.append(bytes(raw[position:position + length]).decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"tensor {name!r}: BYTES element is not UTF-8 text", name) from None
        position += length
    if len(items) != count:
        raise InvalidInput(f"tensor {name!r}: shape {list(shape)} holds {count} elements but the binary data has "
                           f"{len(items)}", name)
    array = np.empty(count, dtype=object)
    array[:] = items
    return array.reshape(shape)


# -- responses --------------------------------------------------------------------------
def encode_response(model: str, version: str | None, request_id: str | None, outputs: Mapping[str, np.ndarray],
                    binary: set[str] | bool, parameters: Mapping[str, Any] | None = None) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it (else ``None``)."""
    entries = []
    blobs: list[bytes] = []
    for name, array in outputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(array.dtype), "shape": list(array.shape)}
        as_binary = binary is True or (isinstance(binary, set) and name in binary)
        if as_binary:
            blob = _to_binary(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _to_json(array)
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model, "outputs": entries}
    if version is not None:
        response["model_version"] = version
    if request_id is not None:
        response["id"] = request_id
    if parameters:
        response["parameters"] = dict(parameters)
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _to_json(array: np.ndarray) -> Any:
    if array.dtype.kind in "OUS":
        return [str(v) for v in array.ravel()]
    if array.dtype == np.float16:  # NOTE: orjson writes numpy arrays directly, but not float16 ones
        array = array.astype(np.float32)
    return np.ascontiguousarray(array).ravel()


def _to_binary(array: np.ndarray) -> bytes:
    if array.dtype.kind in "OUS":
        parts = []
        for value in array.ravel():
            data = str(value).encode("utf-8")
            parts += [struct.pack("<I", len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
