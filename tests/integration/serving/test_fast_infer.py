"""The lean infer route (:mod:`workbench.serving.fastpath`) answers exactly as FastAPI's infer route does.

Two servers, one with ``fast_infer`` and one without, get the same requests:
good ones (JSON and binary, a version, a request id), bad ones (malformed JSON,
an unknown model or version, a wrong datatype, a body over the limit, no token).
Status, content type, the binary split header, ``Retry-After``/``WWW-Authenticate``
and the body (less the timings) must be the same; the HTTP metrics count both.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from servers import Served, serving

from workbench.serving.app import ServeConfig

TOKEN = "s3cret-token"
_CONFIG = {"max_body_bytes": 4096, "token": TOKEN, "protect_inference": True}
_AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def servers(demo_home: object) -> Iterator[tuple[Served, Served]]:
    with serving(ServeConfig(fast_infer=True, **_CONFIG), pipelines=("tabular", "embed")) as fast, \
            serving(ServeConfig(fast_infer=False, **_CONFIG), pipelines=("tabular", "embed")) as slow:
        yield fast, slow


def _tabular(rows: int = 1, **extra: Any) -> bytes:
    data = np.linspace(0.1, 30.0, 30 * rows, dtype=np.float32).tolist()
    return orjson.dumps({"id": "req-1", "inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 30],
                                                   "data": data}], **extra})


def _binary_text() -> tuple[bytes, dict[str, str]]:
    text = b"the binary extension"
    header = orjson.dumps({"id": "req-2", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                                  "parameters": {"binary_data_size": 4 + len(text)}}],
                           "outputs": [{"name": "embedding", "parameters": {"binary_data": True}}]})
    return header + struct.pack("<I", len(text)) + text, {"Inference-Header-Content-Length": str(len(header))}


REQUESTS: dict[str, tuple[str, bytes, dict[str, str]]] = {
    "json": ("/v2/models/tabular/infer", _tabular(3), _AUTH),
    "version": ("/v2/models/tabular/versions/gbt/infer", _tabular(), _AUTH),
    "binary": ("/v2/models/embed/infer", _binary_text()[0], {**_AUTH, **_binary_text()[1]}),
    "outputs": ("/v2/models/tabular/infer", _tabular(outputs=[{"name": "label"}]), _AUTH),
    "malformed": ("/v2/models/tabular/infer", b'{"inputs": [', _AUTH),
    "unknown model": ("/v2/models/nope/infer", _tabular(), _AUTH),
    "unknown version": ("/v2/models/tabular/versions/v9/infer", _tabular(), _AUTH),
    "wrong datatype": ("/v2/models/tabular/infer", _tabular().replace(b'"FP32"', b'"INT32"'), _AUTH),
    "bad timeout": ("/v2/models/tabular/infer", _tabular(parameters={"timeout_ms": -1}), _AUTH),
    "too large": ("/v2/models/tabular/infer", _tabular(20), _AUTH),
    "no token": ("/v2/models/tabular/infer", _tabular(), {}),
    "wrong token": ("/v2/models/tabular/infer", _tabular(), {"Authorization": "Bearer nope"}),
}
_KEPT_HEADERS = ("content-type", "inference-header-content-length", "retry-after", "www-authenticate")


def _answer(served: Served, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    response = httpx.post(served.url + path, content=body, headers=headers, timeout=30)
    kept = {k: response.headers[k] for k in _KEPT_HEADERS if k in response.headers}
    split = response.headers.get("inference-header-content-length")
    head = response.content[:int(split)] if split else response.content
    parsed = orjson.loads(head)
    if isinstance(parsed, dict):
        (parsed.get("parameters") or {}).pop("timings_ms", None)
    tail = response.content[int(split):] if split else b""
    if split:
        kept["inference-header-content-length"] = "given"  # NOTE: its value varies with the timings' digits
    return response.status_code, kept, (parsed, np.frombuffer(tail, "<f4").round(5).tolist())


@pytest.mark.parametrize("case", list(REQUESTS))
def test_both_infer_routes_answer_alike(servers: tuple[Served, Served], case: str) -> None:
    fast, slow = servers
    path, body, headers = REQUESTS[case]
    status, kept, parsed = _answer(fast, path, body, headers)
    assert (status, kept, parsed) == _answer(slow, path, body, headers)
    assert (status == 200) == (case in ("json", "version", "binary", "outputs")), parsed
    if status != 200:
        assert set(parsed[0]) == {"error"}, parsed


def test_the_fast_route_is_counted_like_the_other(servers: tuple[Served, Served]) -> None:
    fast, _ = servers
    path, body, headers = REQUESTS["json"]
    httpx.post(fast.url + path, content=body, headers=headers, timeout=30)
    httpx.post(fast.url + "/v2/models/nope/infer", content=body, headers=headers, timeout=30)
    text = httpx.get(fast.url + "/metrics", headers=_AUTH, timeout=30).text
    ok = ('workbench_http_requests_total{code="200",method="POST",model="tabular",'
          'route="/v2/models/{name}/infer"}')
    unknown = 'workbench_http_requests_total{code="404",method="POST",model="",route="/v2/models/{name}/infer"}'
    assert ok in text and unknown in text
    # NOTE: requests for made-up model names share the one "" series instead of adding their own.
    assert 'model="nope"' not in text
