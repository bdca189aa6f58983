"""Bad requests over real HTTP: a 4xx with a V2 error body naming the fault, and a server that keeps serving.

The cases follow Triton's L0_input_validation (wrong names, shapes, datatypes,
data sizes and binary framing), sent as raw bytes with httpx; then hypothesis
sends random JSON, random bytes and mutations of valid requests, and only a 4xx
(or, for a mutation that is still valid, a 200) may come back: never a 5xx and
never a hang. The cases run in the server process (``inprocess_server``): what
is checked happens in the HTTP front and the pipeline's validation, before any
batch is formed. The fuzzing runs there and, again, against a server whose
batches run on a LocalCluster (``server``, every pipeline ``fused`` on the
workers), so that what the front let through is decoded by a worker from the
Dask wire. ``WORKBENCH_FUZZ_EXAMPLES`` sets the examples per test (200;
``benchmarks/fuzz_long.py`` runs 10,000).
"""

from __future__ import annotations

import copy
import json
import os
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import Served, serving

from workbench.demo.tabular import load_tabular_data
from workbench.errors import InvalidInput
from workbench.serving.app import BodyLimit, ServeConfig
from workbench.serving.codec import DATATYPES, decode_request
from workbench.tensor import TensorSpec

ROWS = load_tabular_data().x_test[:2]
TABULAR = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 30], "data": ROWS.ravel().tolist()}]}
TEXT = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["The striker scored", "Stocks fell"]}]}
VALID = {"tabular": TABULAR, "text": TEXT}
#: No example may take longer than this: a hang fails the test instead of stalling the suite.
TIMEOUT_S = 30.0
FUZZ = settings(max_examples=int(os.environ.get("WORKBENCH_FUZZ_EXAMPLES", "200")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def http(inprocess_server: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=inprocess_server.url, timeout=TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module", params=["inprocess", "cluster"])
def fuzzed(request: pytest.FixtureRequest) -> Iterator[tuple[httpx.Client, Served]]:
    """A client of the in-process server, then of the LocalCluster one with every pipeline on the workers."""
    served: Served = request.getfixturevalue("inprocess_server" if request.param == "inprocess" else "server")
    with httpx.Client(base_url=served.url, timeout=TIMEOUT_S) as client:
        if request.param == "cluster":
            for name in ("tabular", "text"):
                moved = client.put(f"/api/pipelines/{name}/placement", json={"placement": "fused"})
                assert moved.status_code == 200 and moved.json()["where"] == "remote", moved.text
        yield client, served


def body_of(request: dict[str, Any], **changes: Any) -> bytes:
    """``request`` with its first input's fields changed (a value of ``None`` removes the field), as JSON."""
    changed = copy.deepcopy(request)
    for key, value in changes.items():
        if value is None:
            changed["inputs"][0].pop(key, None)
        else:
            changed["inputs"][0][key] = value
    return json.dumps(changed).encode()


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


def binary_input(name: str, datatype: str, shape: list[int], size: int, blob: bytes) -> tuple[bytes, dict[str, str]]:
    """A request of one binary input, whose ``binary_data_size`` is ``size`` and whose bytes are ``blob``."""
    return binary_body({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                    "parameters": {"binary_data_size": size}}]}, blob)


def bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def binary_rows(rows: np.ndarray, size: int | None = None) -> tuple[bytes, dict[str, str]]:
    blob = rows.astype("<f4").tobytes()
    header = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape),
                          "parameters": {"binary_data_size": len(blob) if size is None else size}}]}
    return binary_body(header, blob)


def assert_still_serving(http: httpx.Client) -> None:
    answer = http.post("/v2/models/tabular/infer", content=json.dumps(TABULAR))
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["outputs"][0]["data"]) == 2
    assert http.get("/v2/health/live").json() == {"live": True}


def assert_error(answer: httpx.Response, status: int, *fragments: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    for fragment in fragments:
        assert fragment in body["error"], (fragment, body["error"])


# -- Triton's L0_input_validation cases -------------------------------------------------
NESTED = 1000
CASES: list[tuple[str, str, bytes, dict[str, str], int, tuple[str, ...]]] = [
    # (case id, model, body, headers, status, fragments of the error message)
    ("malformed-json", "tabular", b'{"inputs": [', {}, 400, ("malformed JSON",)),
    ("empty-body", "tabular", b"", {}, 400, ("malformed JSON",)),
    ("not-utf8", "tabular", b'{"id": "\xff"}', {}, 400, ("malformed JSON",)),
    ("not-an-object", "tabular", b"[1, 2]", {}, 400, ("must be a JSON object",)),
    ("no-inputs", "tabular", b"{}", {}, 400, ("non-empty 'inputs' list",)),
    ("inputs-not-a-list", "tabular", b'{"inputs": {"name": "features"}}', {}, 400, ("'inputs' list",)),
    ("input-without-name", "tabular", body_of(TABULAR, name=None), {}, 400, ("every input needs a 'name'",)),
    ("input-twice", "tabular", json.dumps({"inputs": TABULAR["inputs"] * 2}).encode(), {}, 400,
     ("'features' is given twice",)),
    ("wrong-tensor-name", "tabular", body_of(TABULAR, name="feature"), {}, 400,
     ("unknown input tensor 'feature'", "['features']")),
    ("missing-tensor", "text", body_of(TEXT, name="extra"), {}, 400, ("unknown input tensor 'extra'",)),
    ("wrong-shape", "tabular", body_of(TABULAR, shape=[2, 29], data=[0.5] * 58), {}, 400,
     ("'features'", "shape [2, 29] where [-1, 30] is expected")),
    ("scalar-shape", "tabular", body_of(TABULAR, shape=[], data=[0.5]), {}, 400, ("'features'", "a scalar")),
    ("empty-batch", "tabular", body_of(TABULAR, shape=[0, 30], data=[]), {}, 400, ("'features'", "empty batch")),
    ("negative-shape", "tabular", body_of(TABULAR, shape=[-1, 30]), {}, 400,
     ("'features'", "'shape' must be a list of non-negative integers")),
    ("shape-not-a-list", "tabular", body_of(TABULAR, shape="2x30"), {}, 400, ("'shape' must be a list",)),
    ("no-shape", "tabular", body_of(TABULAR, shape=None), {}, 400, ("'shape' must be a list",)),
    ("huge-shape", "tabular", body_of(TABULAR, shape=[2**32, 2**32], data=[]), {}, 400,
     ("holds 18446744073709551616 elements but 'data' has 0",)),
    ("wrong-datatype", "tabular", body_of(TABULAR, datatype="INT64", data=[1] * 60), {}, 400,
     ("'features'", "datatype INT64 where model 'tabular' expects FP32")),
    ("bool-datatype", "tabular", body_of(TABULAR, datatype="BOOL", data=[True] * 60), {}, 400,
     ("datatype BOOL where model 'tabular' expects FP32",)),
    ("bytes-for-numbers", "tabular", body_of(TABULAR, datatype="BYTES", data=["0.5"] * 60), {}, 400,
     ("datatype BYTES where model 'tabular' expects FP32",)),
    ("numbers-for-text", "text", body_of(TEXT, datatype="FP32", data=[1.0, 2.0]), {}, 400,
     ("'text'", "datatype FP32 where model 'text' expects BYTES")),
    ("unknown-datatype", "tabular", body_of(TABULAR, datatype="FLOAT32"), {}, 400,
     ("unknown datatype 'FLOAT32'", "FP32")),
    ("datatype-not-a-string", "tabular", body_of(TABULAR, datatype=["FP32"]), {}, 400, ("unknown datatype",)),
    ("too-little-data", "tabular", body_of(TABULAR, data=[0.5] * 59), {}, 400,
     ("'features'", "shape [2, 30] holds 60 elements but 'data' has 59")),
    ("too-much-data", "tabular", body_of(TABULAR, data=[0.5] * 61), {}, 400, ("'data' has 61",)),
    ("nested-data", "tabular", body_of(TABULAR, data=ROWS.tolist()), {}, 200, ()),
    ("deeply-nested-data", "tabular",
     b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1], "data": '
     + b"[" * NESTED + b"1" + b"]" * NESTED + b"}]}", {}, 400, ("shape [1] where [-1, 30]",)),
    ("too-deep-json", "tabular", b"[" * 5000 + b"]" * 5000, {}, 400, ("malformed JSON",)),
    ("no-data", "tabular", body_of(TABULAR, data=None), {}, 400, ("no 'data' and no binary_data_size",)),
    ("strings-for-fp32", "tabular", body_of(TABULAR, data=["0.5"] * 60), {}, 400, ("FP32 data must be numbers",)),
    ("fp32-out-of-range", "tabular", body_of(TABULAR, data=[1e300] * 60), {}, 400, ("does not fit FP32",)),
    ("bytes-not-strings", "text", body_of(TEXT, data=[1, 2]), {}, 400, ("'text'", "BYTES data must be strings")),
    ("bytes-null", "text", body_of(TEXT, data=["fine", None]), {}, 400, ("BYTES data must be strings",)),
    ("null-among-strings-for-fp32", "tabular", body_of(TABULAR, data=[None] * 59 + ["0.5"]), {}, 400,
     ("'features'", "FP32 data must be numbers or null",)),
    ("null-for-int64", "tabular", body_of(TABULAR, datatype="INT64", data=[None] * 60), {}, 400,
     ("INT64 data must be numbers",)),
    ("id-not-a-string", "tabular", json.dumps({**TABULAR, "id": 7}).encode(), {}, 400, ("'id' must be a string",)),
    ("parameters-not-an-object", "tabular", json.dumps({**TABULAR, "parameters": [1]}).encode(), {}, 400,
     ("'parameters' must be an object",)),
    ("input-parameters-not-an-object", "tabular", body_of(TABULAR, parameters="binary"), {}, 400,
     ("'parameters' must be an object",)),
    ("outputs-not-a-list", "tabular", json.dumps({**TABULAR, "outputs": "label"}).encode(), {}, 400,
     ("'outputs' must be a list",)),
    ("unknown-output", "tabular", json.dumps({**TABULAR, "outputs": [{"name": "labels"}]}).encode(), {}, 400,
     ("unknown output 'labels'", "'label'")),
    ("output-parameters-not-an-object", "tabular",
     json.dumps({**TABULAR, "outputs": [{"name": "label", "parameters": True}]}).encode(), {}, 400,
     ("output 'label': 'parameters' must be an object",)),
    ("timeout-not-a-number", "tabular", json.dumps({**TABULAR, "parameters": {"timeout_ms": "soon"}}).encode(), {},
     400, ("the request timeout must be a finite number > 0, not 'soon'",)),
    ("timeout-negative", "tabular", json.dumps({**TABULAR, "parameters": {"timeout_ms": -5}}).encode(), {}, 400,
     ("the request timeout must be a finite number > 0",)),
    ("timeout-nan", "tabular", json.dumps({**TABULAR, "parameters": {"timeout_ms": float("nan")}}).encode(), {},
     400, ("the request timeout must be a finite number > 0",)),
    ("timeout-header-infinite", "tabular", json.dumps(TABULAR).encode(), {"X-Request-Timeout-Ms": "inf"}, 400,
     ("the request timeout must be a finite number > 0, not 'inf'",)),
    # -- binary tensor data extension
    ("binary-size-past-the-body", "tabular", *binary_rows(ROWS, size=241), 400,
     ("'features'", "binary_data_size 241 runs past the end of the body")),
    ("binary-size-not-the-shape", "tabular", *binary_input("features", "FP32", [2, 30], 8, b"\0" * 8),
     400, ("shape [2, 30] of FP32 needs 240 bytes but binary_data_size is 8",)),
    ("binary-size-negative", "tabular", *binary_rows(ROWS, size=-1), 400,
     ("binary_data_size must be a non-negative integer",)),
    ("binary-bytes-left-over", "tabular", *binary_input("features", "FP32", [1, 30], 120, b"\0" * 130),
     400, ("10 bytes of binary data follow the last binary input",)),
    ("binary-bytes-cut-short", "text", *binary_input("text", "BYTES", [1], 6, struct.pack("<I", 10) + b"ab"),
     400, ("'text'", "BYTES element runs past binary_data_size")),
    ("binary-bytes-count", "text", *binary_input("text", "BYTES", [3], 16, bytes_tensor(b"one", b"two") + b"\0\0"),
     400, ("BYTES element length cut short",)),
    ("binary-bytes-fewer-items", "text", *binary_input("text", "BYTES", [3], 14, bytes_tensor(b"one", b"two")),
     400, ("shape [3] holds 3 elements but the binary data has 2",)),
    ("binary-bytes-not-utf8", "text", *binary_input("text", "BYTES", [1], 6, bytes_tensor(b"\xff\xfe")),
     400, ("BYTES element is not UTF-8 text",)),
    ("header-length-not-a-number", "tabular", binary_rows(ROWS)[0], {"Inference-Header-Content-Length": "ten"}, 400,
     ("inference-header-content-length must be an integer, not 'ten'",)),
    ("header-length-past-the-body", "tabular", binary_rows(ROWS)[0], {"Inference-Header-Content-Length": "99999"},
     400, ("inference-header-content-length is 99999 but the body has",)),
    ("header-length-negative", "tabular", binary_rows(ROWS)[0], {"Inference-Header-Content-Length": "-3"}, 400,
     ("inference-header-content-length is -3",)),
    ("header-length-cuts-the-json", "tabular", binary_rows(ROWS)[0], {"Inference-Header-Content-Length": "20"}, 400,
     ("malformed JSON",)),
    ("binary-without-header-length", "tabular", binary_rows(ROWS)[0], {}, 400, ("malformed JSON",)),
]


@pytest.mark.parametrize(("model", "body", "headers", "status", "fragments"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_bad_request_is_a_4xx_naming_the_fault(http: httpx.Client, model: str, body: bytes,
                                                headers: dict[str, str], status: int,
                                                fragments: tuple[str, ...]) -> None:
    answer = http.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    if status == 200:
        assert answer.status_code == 200, answer.text
    else:
        assert_error(answer, status, *fragments)
    assert_still_serving(http)


def test_the_same_rows_as_binary_and_as_json_give_the_same_answer(http: httpx.Client) -> None:
    body, headers = binary_rows(ROWS)
    as_binary = http.post("/v2/models/tabular/infer", content=body, headers=headers)
    as_json = http.post("/v2/models/tabular/infer", content=json.dumps(TABULAR))
    assert as_binary.status_code == as_json.status_code == 200, (as_binary.text, as_json.text)
    assert as_binary.json()["outputs"] == as_json.json()["outputs"]


def test_null_is_a_missing_value_as_pandas_writes_it(http: httpx.Client) -> None:
    rows = ROWS.copy()
    rows[0, 3] = rows[1, 17] = np.nan
    body, headers = binary_rows(rows)
    as_nan = http.post("/v2/models/tabular/infer", content=body, headers=headers)
    data: list[float | None] = rows.ravel().tolist()
    as_null = http.post("/v2/models/tabular/infer",
                        content=body_of(TABULAR, data=[None if v != v else v for v in data]))
    assert as_nan.status_code == as_null.status_code == 200, (as_nan.text, as_null.text)
    assert as_null.json()["outputs"] == as_nan.json()["outputs"]


def test_null_where_the_input_takes_no_nan_is_a_400_naming_it() -> None:
    _, tensors = decode_request(body_of(TABULAR, shape=[1, 2], data=[1.5, None]), None)
    assert np.isnan(tensors["features"][0, 1]) and tensors["features"][0, 0] == 1.5
    with pytest.raises(InvalidInput, match="tensor 'features': contains NaN \\(or null\\)") as refused:
        TensorSpec("features", "float32", (-1, 2)).validate(tensors["features"])
    assert refused.value.status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("POST", "/v2/models/no-such-model/infer", 404, "no pipeline is deployed as 'no-such-model'"),
        ("GET", "/v2/models/no-such-model", 404, "'no-such-model'"),
        ("GET", "/v2/models/no-such-model/ready", 404, "'no-such-model'"),
        ("POST", "/v2/models/tabular/versions/7/infer", 404, "model 'tabular' serves version 'gbt', not '7'"),
        ("GET", "/v2/models/tabular/versions/logreg", 404, "not 'logreg'"),
        ("GET", "/v2/models/tabular/versions/logreg/ready", 404, "not 'logreg'"),
        ("POST", "/v2/repository/models/no-such-model/unload", 404, "'no-such-model'"),
        ("GET", "/v2/no/such/route", 404, "Not Found"),
        ("GET", "/v2/models/tabular/infer", 405, "Method Not Allowed"),
    ],
)
def test_unknown_models_versions_and_routes(http: httpx.Client, method: str, path: str, status: int,
                                            fragment: str) -> None:
    answer = http.request(method, path, content=json.dumps(TABULAR) if method == "POST" else None)
    assert_error(answer, status, fragment)
    assert_still_serving(http)


# -- body limit -------------------------------------------------------------------------
LIMIT = 4096


@pytest.fixture(scope="module")
def small_limit() -> Iterator[httpx.Client]:
    with serving(ServeConfig(max_body_bytes=LIMIT), pipelines=["tabular"]) as served, \
            httpx.Client(base_url=served.url, timeout=TIMEOUT_S) as client:
        yield client


def test_a_body_over_the_limit_is_a_413(small_limit: httpx.Client) -> None:
    fits = json.dumps(TABULAR).encode()
    assert len(fits) < LIMIT
    assert small_limit.post("/v2/models/tabular/infer", content=fits).status_code == 200
    too_large = body_of(TABULAR, shape=[40, 30], data=[0.5] * 1200)
    assert len(too_large) > LIMIT
    assert_error(small_limit.post("/v2/models/tabular/infer", content=too_large), 413,
                 f"request body larger than {LIMIT} bytes")

    def chunks() -> Iterator[bytes]:  # NOTE: no Content-Length: the limit is found while the body streams in
        for start in range(0, len(too_large), 1024):
            yield too_large[start:start + 1024]

    assert_error(small_limit.post("/v2/models/tabular/infer", content=chunks()), 413, "larger than")
    # NOTE: FastAPI reads a control route's body itself, and would answer its own 400 for it.
    assert_error(small_limit.post("/api/pipelines", content=chunks(), headers={"Content-Type": "application/json"}),
                 413, "larger than")
    assert small_limit.post("/v2/models/tabular/infer", content=fits).status_code == 200


async def test_body_limit_on_a_small_app() -> None:
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    transport = httpx.ASGITransport(app=BodyLimit(echo, max_bytes=10))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/", content=b"x" * 10)).text == "10"
        refused = await client.post("/", content=b"x" * 11)
        assert refused.status_code == 413 and refused.json() == {"error": "request body larger than 10 bytes"}


# -- fuzzing ----------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30,
)
#: Where a mutation may land in a request (missing parts are skipped).
PLACES: list[tuple[str | int, ...]] = [
    (), ("inputs",), ("inputs", 0), ("inputs", 0, "name"), ("inputs", 0, "datatype"), ("inputs", 0, "shape"),
    ("inputs", 0, "shape", 0), ("inputs", 0, "shape", -1), ("inputs", 0, "data"), ("inputs", 0, "data", 0),
    ("inputs", 0, "data", -1), ("inputs", 0, "parameters"), ("inputs", 0, "parameters", "binary_data_size"),
    ("outputs",), ("outputs", 0), ("outputs", 0, "name"), ("outputs", 0, "parameters"),
    ("outputs", 0, "parameters", "binary_data"), ("parameters",), ("parameters", "timeout_ms"),
    ("parameters", "binary_data_output"), ("id",),
]
#: Header values that HTTP allows (no surrounding blanks) but that are not all lengths.
HEADER_TEXT = st.text(alphabet="0123456789+-_.e xX", min_size=1, max_size=6).map(str.strip).filter(bool)
NEW_VALUES = (JSON_VALUES | st.sampled_from(sorted(DATATYPES)) | st.sampled_from(["features", "text", "label"])
              | st.lists(st.floats(width=32) | st.integers(-(2**40), 2**40), min_size=0, max_size=64))


def assert_no_server_error(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text
    if answer.status_code != 200:
        assert 400 <= answer.status_code < 500, answer.text
        assert isinstance(answer.json()["error"], str)


def mutate(request: dict[str, Any], place: tuple[str | int, ...], action: str, value: Any) -> None:
    parent: Any = request
    for key in place[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return
    if not place:
        request.clear()
        if isinstance(value, dict):
            request.update(value)
        return
    key = place[-1]
    if isinstance(parent, dict) and isinstance(key, str):
        if action == "delete":
            parent.pop(key, None)
        else:
            parent[key] = value
    elif isinstance(parent, list) and isinstance(key, int) and parent:
        if action == "delete":
            del parent[key]
        elif action == "append":
            parent.append(value)
        else:
            parent[key] = value


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    model = draw(st.sampled_from(sorted(VALID)))
    binary = draw(st.booleans())
    request = copy.deepcopy(VALID[model])
    if model == "tabular" and draw(st.booleans()):
        # NOTE: rows without NaN, so that the JSON is strict and takes orjson's path
        request["inputs"][0]["data"] = np.nan_to_num(ROWS).ravel().tolist()
    request["outputs"] = [{"name": "label" if model == "tabular" else "topic", "parameters": {"binary_data": binary}}]
    request["parameters"] = {"timeout_ms": 60_000}
    blob = b""
    if binary:
        tensor = request["inputs"][0]
        data = tensor.pop("data")
        blob = (np.asarray(data, dtype="<f4").tobytes() if model == "tabular"
                else bytes_tensor(*(s.encode() for s in data)))
        tensor["parameters"] = {"binary_data_size": len(blob)}
    for _ in range(draw(st.integers(1, 3))):
        mutate(request, draw(st.sampled_from(PLACES)), draw(st.sampled_from(["replace", "delete", "append"])),
               draw(NEW_VALUES))
    head = json.dumps(request).encode()
    body = head + (draw(st.sampled_from([blob, blob[:-1], blob + b"\0", b""])) if binary else b"")
    headers = {"Inference-Header-Content-Length": str(len(head))} if binary else {}
    if draw(st.integers(0, 9)) == 0:
        body = body[:draw(st.integers(0, len(body)))]
    return model, body, headers


@FUZZ
@given(body=JSON_VALUES.map(lambda v: json.dumps(v).encode()), model=st.sampled_from(sorted(VALID)))
def test_fuzz_random_json_is_never_a_server_error(fuzzed: tuple[httpx.Client, Served], body: bytes,
                                                  model: str) -> None:
    assert_no_server_error(fuzzed[0].post(f"/v2/models/{model}/infer", content=body))


@FUZZ
@given(body=st.binary(max_size=512), model=st.sampled_from(sorted(VALID)),
       header_length=st.none() | st.integers(-5, 600).map(str) | HEADER_TEXT)
def test_fuzz_random_bytes_are_never_a_server_error(fuzzed: tuple[httpx.Client, Served], body: bytes,
                                                   header_length: str | None, model: str) -> None:
    headers = {} if header_length is None else {"Inference-Header-Content-Length": header_length}
    assert_no_server_error(fuzzed[0].post(f"/v2/models/{model}/infer", content=body, headers=headers))


@FUZZ
@given(case=mutated_requests())
def test_fuzz_mutated_requests_are_never_a_server_error(fuzzed: tuple[httpx.Client, Served],
                                                       case: tuple[str, bytes, dict[str, str]]) -> None:
    model, body, headers = case
    assert_no_server_error(fuzzed[0].post(f"/v2/models/{model}/infer", content=body, headers=headers))


def test_the_server_serves_after_the_fuzzing(fuzzed: tuple[httpx.Client, Served]) -> None:
    http, served = fuzzed
    assert_still_serving(http)
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert sorted(served.engine.names()) == ["embed", "tabular", "text"]
    if served.engine.backend.kind == "dask":
        # NOTE: the fuzzed requests that passed the front went over the wire and ran on the workers.
        ran = sum(sum(w["ran"].values()) for w in served.engine.stats("tabular")["workers"])
        assert ran > 0


def test_a_deadline_too_far_to_count_is_served_without_one(http: httpx.Client) -> None:
    # NOTE: found by benchmarks/fuzz_long.py: 1.8e302 ms overflowed the batcher's integer nanoseconds (a 500).
    request = {**TABULAR, "parameters": {"timeout_ms": 1.797693134862316e302}}
    answer = http.post("/v2/models/tabular/infer", content=json.dumps(request))
    assert answer.status_code == 200, answer.text
