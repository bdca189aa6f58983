"""The JSON answer of every route: rendered by orjson, numpy values and integer keys included.

NOTE: FastAPI 0.165 deprecates its ``ORJSONResponse`` (it warns on every answer) in favour of
serialising through Pydantic, which refuses numpy scalars (``np.float32``) that the statistics
and the tensors hold. This is the same few lines, kept here.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSONResponse

__all__ = ["JSONResponse"]


class JSONResponse(_StarletteJSONResponse):
    """A JSON response written by orjson (numpy arrays and scalars, non-string keys as strings).

    Examples
    --------
    >>> JSONResponse({"error": "no such model"}, status_code=404).body
    b'{"error":"no such model"}'
    """

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
