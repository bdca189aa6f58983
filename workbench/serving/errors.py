"""Errors as the V2 error body: ``{"error": "..."}`` with the status (and headers) each one calls for."""

from __future__ import annotations

import math

import orjson

from workbench.batching.batcher import Overloaded
from workbench.errors import WorkbenchError

__all__ = ["error_answer"]


def error_answer(exc: WorkbenchError | ValueError) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the answer to ``exc``: its own status (400 for a plain ``ValueError``).

    A full queue (:class:`~workbench.batching.Overloaded`) says when to come back (``Retry-After``);
    a missing token names the scheme (``WWW-Authenticate``).

    Examples
    --------
    >>> error_answer(ValueError("bad"))
    (400, {}, b'{"error":"bad"}')
    """
    status = exc.status_code if isinstance(exc, WorkbenchError) else 400
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return status, headers, orjson.dumps({"error": str(exc)})
