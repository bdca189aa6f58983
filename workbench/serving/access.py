"""Who may call what: every route of the server is in one access class, and one guard applies it.

Three classes (:class:`Access`):

- ``open``: liveness and readiness probes, the favicon and the dashboard's
  static assets (files of the installed packages, no state). Never need the token.
- ``inference``: the V2 inference and metadata routes, ``/metrics`` and the API
  docs. Open by default; with ``protect_inference`` they need the token.
- ``control``: everything that reads or changes the server's state (the control
  API, the V2 repository extension, the dashboard and its websockets). They need
  the token whenever the server has one.

A path no rule names is ``control`` (fail closed), and :func:`unclassified`
lists the routes of an app that no rule names, so that :func:`create_app`
refuses to build a server with a route nobody has classified.

The dashboard takes the token once (``/dashboard?token=<token>``) and answers
with a redirect to the same page without it, and an HttpOnly cookie that stands
for it from then on, its websockets included. ``Authorization: Bearer <token>``
works everywhere.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Iterable, Iterator, Mapping
from hashlib import sha256
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from workbench.serving.responses import JSONResponse

__all__ = ["COOKIE", "DASHBOARD", "REFUSED", "Access", "AccessGuard", "access_of", "bearer_ok", "cookie_value",
           "route_table", "unclassified"]

DASHBOARD = "/dashboard"
COOKIE = "workbench_dashboard"
REFUSED = "a valid token is required: send 'Authorization: Bearer <token>'"


class Access(enum.Enum):
    """What a request needs (see the module docstring)."""

    OPEN = "open"
    INFERENCE = "inference"
    CONTROL = "control"


_NAME = r"[^/]+"
#: The rules, first match wins; paths are matched whole.
RULES: tuple[tuple[re.Pattern[str], Access], ...] = tuple((re.compile(pattern), access) for pattern, access in (
    (r"/v2/health/(live|ready)", Access.OPEN),
    (r"/favicon\.ico", Access.OPEN),
    (r"/static/.+", Access.OPEN),
    (r"/components/.+", Access.OPEN),
    (r"/v2", Access.INFERENCE),
    (rf"/v2/models/{_NAME}(/versions/{_NAME})?(/ready|/infer)?", Access.INFERENCE),
    (r"/metrics", Access.INFERENCE),
    (r"/(openapi\.json|docs|docs/oauth2-redirect|redoc)", Access.INFERENCE),
    (r"/v2/repository/.+", Access.CONTROL),
    (r"/api/.+", Access.CONTROL),
    (rf"{DASHBOARD}(/.+)?", Access.CONTROL),
))


def access_of(path: str) -> Access | None:
    """The class of a request's path; ``None`` when no rule names it (the guard then treats it as ``control``).

    Examples
    --------
    >>> access_of("/v2/models/tabular/infer"), access_of("/v2/repository/models/tabular/unload")
    (<Access.INFERENCE: 'inference'>, <Access.CONTROL: 'control'>)
    >>> access_of("/v2/models/tabular/unload") is None
    True
    """
    for pattern, access in RULES:
        if pattern.fullmatch(path):
            return access
    return None


def bearer_ok(authorization: bytes, token: bytes) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` (the scheme is case-insensitive, RFC 7235)."""
    scheme, _, value = authorization.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(value, token)


def cookie_value(token: str) -> str:
    """What the dashboard's cookie holds: a digest of the token (the token itself never sits in the browser)."""
    return hmac.new(token.encode(), b"workbench-dashboard", sha256).hexdigest()


def route_table(routes: Iterable[Any]) -> Iterator[tuple[str, frozenset[str], str]]:
    """``(kind, methods, path)`` of every route, through included routers and mounts.

    ``kind`` is ``http``, ``websocket`` or ``mount``; a mount's path is its prefix.
    """
    for route in routes:
        inner = getattr(route, "original_router", None)  # NOTE: FastAPI >= 0.160 keeps an included router whole
        if inner is not None:
            yield from route_table(inner.routes)
        elif hasattr(route, "methods"):
            yield "http", frozenset(route.methods or ()), route.path
        elif hasattr(route, "app") and hasattr(route, "routes"):
            yield "mount", frozenset(), route.path
        else:
            yield "websocket", frozenset(), route.path


def sample_path(path: str) -> str:
    """A concrete path that ``path`` (a route's template, or a mount's prefix) matches: ``{name}`` becomes ``x``.

    Examples
    --------
    >>> sample_path("/api/pipelines/{name}/stats"), sample_path("/components/{path:path}")
    ('/api/pipelines/x/stats', '/components/x')
    """
    return re.sub(r"\{[^}]+\}", "x", path)


def unclassified(routes: Iterable[Any]) -> list[str]:
    """The routes that no rule names (a mount stands for the paths below it)."""
    found = []
    for kind, _, path in route_table(routes):
        concrete = sample_path(path) + ("/x" if kind == "mount" else "")
        if access_of(concrete) is None:
            found.append(path)
    return found


class AccessGuard:
    """Refuse, with 401 (a websocket: close before the handshake), what the request's class needs and it lacks.

    Parameters
    ----------
    app
        The application inside.
    token
        The server's token.
    protect_inference
        Whether ``inference`` routes need the token too.
    """

    def __init__(self, app: ASGIApp, token: str, protect_inference: bool = False) -> None:
        self.app = app
        self.token = token.encode()
        self.cookie = cookie_value(token).encode()
        self.open = {Access.OPEN, Access.INFERENCE} if not protect_inference else {Access.OPEN}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or access_of(scope["path"]) in self.open:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers: Mapping[bytes, bytes] = dict(scope.get("headers") or [])
        dashboard = path == DASHBOARD or path.startswith(DASHBOARD + "/")
        # NOTE: the token in the address goes first, so that it never stays there, even with the cookie set.
        if dashboard and scope["type"] == "http" and await self._token_once(scope, send):
            return
        if bearer_ok(headers.get(b"authorization", b""), self.token) or (dashboard and self._cookie_ok(headers)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # NOTE: closing before accepting refuses the handshake (HTTP 403).
            await send({"type": "websocket.close", "code": 1008})
            return
        message = (f"the dashboard needs the server's token: open {DASHBOARD}?token=<token> once "
                   "(or send 'Authorization: Bearer <token>')") if dashboard else REFUSED
        response = JSONResponse({"error": message}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _cookie_ok(self, headers: Mapping[bytes, bytes]) -> bool:
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == COOKIE.encode() and hmac.compare_digest(value, self.cookie):
                return True
        return False

    async def _token_once(self, scope: Scope, send: Send) -> bool:
        """``?token=<token>`` on a dashboard page: redirect to the page without it, with the cookie set."""
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = next((value for key, value in query if key == "token"), None)
        if given is None or not hmac.compare_digest(given.encode(), self.token):
            return False
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        # NOTE: a relative redirect and no cookie Path, so that both still hold behind a proxy's prefix
        # (jupyter-server-proxy serves this page at /workbench/dashboard, and forwards /dashboard here).
        location = scope["path"].rsplit("/", 1)[1] + (f"?{rest}" if rest else "")
        cookie = f"{COOKIE}={self.cookie.decode()}; HttpOnly; SameSite=Strict"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode()),
                                (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return True
