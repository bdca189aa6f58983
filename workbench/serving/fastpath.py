"""The V2 infer route answered before FastAPI: the serving hot path.

Under load, FastAPI's per-request machinery (its telemetry check, its error,
body-limit and exit-stack middlewares, route matching over every route,
dependency solving, the wrapped ``send`` of each layer) costs the serving
process more than the decoding, batching and encoding of a small request
together. Infer requests (``POST /v2/models/{name}[/versions/{v}]/infer``) are
therefore answered here, by :class:`WorkbenchAPI` before any layer of
FastAPI's own, by the same code the FastAPI route calls
(:func:`workbench.serving.v2.answer_infer`), with the same token check, body
limit, error bodies and HTTP metrics. Every other request passes through.
``ServeConfig(fast_infer=False)`` routes infer requests through FastAPI
instead (same answers; the benchmark compares the two).
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import orjson
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from workbench.errors import WorkbenchError
from workbench.serving.access import REFUSED, bearer_ok
from workbench.serving.codec import HEADER_LENGTH
from workbench.serving.errors import error_answer
from workbench.serving.v2 import TIMEOUT_HEADER, answer_infer

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from workbench.serving.app import ServeConfig

__all__ = ["InferFastPath", "WorkbenchAPI"]

_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_ROUTES = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
_HEADER_LENGTH, _TIMEOUT = HEADER_LENGTH.encode(), TIMEOUT_HEADER.encode()
_JSON = [(b"content-type", b"application/json")]
_BINARY = [(b"content-type", b"application/octet-stream")]


class WorkbenchAPI(FastAPI):
    """FastAPI, with V2 infer requests answered by its :attr:`fast_path` (when set) before any of FastAPI's layers."""

    fast_path: InferFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast_path = self.fast_path
        if fast_path is None or not await fast_path(scope, receive, send):
            await super().__call__(scope, receive, send)


class InferFastPath:
    """Answers V2 infer requests of an application (:class:`WorkbenchAPI`) itself.

    Parameters
    ----------
    app
        The application, whose ``state`` holds the engine and the HTTP metrics once started.
    config
        The server's :class:`~workbench.serving.app.ServeConfig` (token, body limit, default deadline).
    """

    def __init__(self, app: FastAPI, config: ServeConfig) -> None:
        self.state = app.state
        self.config = config
        self._token = config.token.encode() if config.token and config.protect_inference else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer ``scope`` if it is an infer request (and the engine is up); whether it did."""
        found = (_INFER.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST"
                 else None)
        state = self.state
        engine = getattr(state, "engine", None) if found is not None else None
        if found is None or engine is None:
            return False
        received = time.perf_counter()
        name, version = found[1], found[2]
        headers = dict(scope["headers"])
        extra: list[tuple[bytes, bytes]] = []
        try:
            self._check_token(headers)
            body = await self._body(headers, receive)
            answer, header_length = await answer_infer(
                engine, name, version, body, _text(headers.get(_HEADER_LENGTH)), _text(headers.get(_TIMEOUT)),
                self.config.default_timeout_ms, received)
            status = 200
            if header_length is None:
                extra = _JSON
            else:
                extra = [*_BINARY, (b"inference-header-content-length", str(header_length).encode())]
        except (WorkbenchError, ValueError) as exc:
            status, error_headers, answer = error_answer(exc)
            extra = [*_JSON, *((k.lower().encode(), v.encode()) for k, v in error_headers.items())]
        except Exception as exc:  # NOTE: what nobody foresaw still gets the V2 error body, and its traceback logged
            logger.exception("infer request to %r failed", name)
            status, extra = 500, _JSON
            answer = orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})
        await send({"type": "http.response.start", "status": status,
                    "headers": [*extra, (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})
        instruments = getattr(state, "http_metrics", None)
        if instruments is not None:
            instruments.count("POST", _ROUTES[version is not None], name if name in engine else "", status,
                              time.perf_counter() - received)
        return True

    def _check_token(self, headers: dict[bytes, bytes]) -> None:
        if self._token is not None and not bearer_ok(headers.get(b"authorization", b""), self._token):
            raise WorkbenchError(REFUSED, 401)

    async def _body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        """The whole body; 413 as soon as it is known to pass the limit (by Content-Length, else while read)."""
        limit = self.config.max_body_bytes
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise WorkbenchError("the client went away before it sent the whole body", 400)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> WorkbenchError:
    return WorkbenchError(f"request body larger than {limit} bytes", 413)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
