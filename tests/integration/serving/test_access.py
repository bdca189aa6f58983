"""Every route of the server is in an access class, and over real HTTP each class is what it says.

The table below is the whole route table of a server with the dashboard: a
route added to the app and not here fails :func:`test_the_route_table_is_classified`,
and one that no rule of :mod:`workbench.serving.access` names keeps the app from being built.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client
from fastapi import FastAPI
from servers import Served, serving

from workbench.engine import Engine
from workbench.serving.access import COOKIE, Access, access_of, cookie_value, route_table, sample_path, unclassified
from workbench.serving.app import ServeConfig, create_app
from workbench.ui.dashboard import COMPONENTS

TOKEN = "correct-horse-battery-staple"
OPEN, INFERENCE, CONTROL = Access.OPEN, Access.INFERENCE, Access.CONTROL

#: ``(kind, method, path) -> class`` of every route; a dashboard page stands with its websocket.
EXPECTED: dict[tuple[str, str, str], Access] = {
    ("http", "GET", "/v2/health/live"): OPEN,
    ("http", "GET", "/v2/health/ready"): OPEN,
    ("http", "GET", "/favicon.ico"): OPEN,
    ("http", "GET", "/components/{path:path}"): OPEN,
    ("mount", "", "/static"): OPEN,
    ("mount", "", "/static/extensions/panel"): OPEN,
    ("http", "GET", "/v2"): INFERENCE,
    ("http", "GET", "/v2/models/{name}"): INFERENCE,
    ("http", "GET", "/v2/models/{name}/versions/{version}"): INFERENCE,
    ("http", "GET", "/v2/models/{name}/ready"): INFERENCE,
    ("http", "GET", "/v2/models/{name}/versions/{version}/ready"): INFERENCE,
    ("http", "POST", "/v2/models/{name}/infer"): INFERENCE,
    ("http", "POST", "/v2/models/{name}/versions/{version}/infer"): INFERENCE,
    ("http", "GET", "/metrics"): INFERENCE,
    ("http", "GET", "/openapi.json"): INFERENCE,
    ("http", "GET", "/docs"): INFERENCE,
    ("http", "GET", "/docs/oauth2-redirect"): INFERENCE,
    ("http", "GET", "/redoc"): INFERENCE,
    ("http", "POST", "/v2/repository/index"): CONTROL,
    ("http", "POST", "/v2/repository/models/{name}/load"): CONTROL,
    ("http", "POST", "/v2/repository/models/{name}/unload"): CONTROL,
    ("http", "GET", "/api/pipelines"): CONTROL,
    ("http", "POST", "/api/pipelines"): CONTROL,
    ("http", "DELETE", "/api/pipelines/{name}"): CONTROL,
    ("http", "POST", "/api/pipelines/{name}/swap"): CONTROL,
    ("http", "PUT", "/api/pipelines/{name}/placement"): CONTROL,
    ("http", "PUT", "/api/pipelines/{name}/reference"): CONTROL,
    ("http", "PUT", "/api/pipelines/{name}/batching"): CONTROL,
    ("http", "PUT", "/api/pipelines/{name}/latency-target"): CONTROL,
    ("http", "PUT", "/api/pipelines/{name}/policy"): CONTROL,
    ("http", "PUT", "/api/pipelines/{name}/shadow"): CONTROL,
    ("http", "DELETE", "/api/pipelines/{name}/shadow"): CONTROL,
    ("http", "GET", "/api/pipelines/{name}/stats"): CONTROL,
    ("http", "POST", "/api/pipelines/{name}/feedback"): CONTROL,
    ("http", "GET", "/api/pipelines/{name}/quality"): CONTROL,
    ("http", "GET", "/api/pipelines/{name}/predictions.parquet"): CONTROL,
    ("http", "GET", "/api/cluster"): CONTROL,
    ("http", "PUT", "/api/autoscaling"): CONTROL,
    **{entry: CONTROL for page in ["/dashboard", *(f"/dashboard/{c.route}" for c in COMPONENTS if c.route)]
       for entry in (("http", "GET", page), ("websocket", "", f"{page}/ws"))},
}


async def _inprocess() -> Engine:
    return Engine.inprocess()


def table(app: FastAPI) -> dict[tuple[str, str, str], Access | None]:
    """The app's routes as ``EXPECTED`` spells them (HEAD, which Starlette adds to each GET, left out)."""
    found: dict[tuple[str, str, str], Access | None] = {}
    for kind, methods, path in route_table(app.routes):
        access = access_of(sample_path(path) + ("/x" if kind == "mount" else ""))
        for method in sorted(methods - {"HEAD"}) or [""]:
            found[kind, method, path] = access
    return found


def test_the_route_table_is_classified() -> None:
    app = create_app(_inprocess, ServeConfig(dashboard=True))
    assert unclassified(app.routes) == []
    assert table(app) == EXPECTED


def test_an_unclassified_route_keeps_the_app_from_being_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.serving import v2

    monkeypatch.setattr(v2.router, "routes", [*v2.router.routes])
    v2.router.add_api_route("/v2/purge", lambda: None, methods=["POST"])
    with pytest.raises(RuntimeError, match=r"routes without an access class .*\['/v2/purge'\]"):
        create_app(_inprocess, ServeConfig(dashboard=False))


@pytest.fixture(scope="module")
def served(demo_home: object) -> Iterator[Served]:
    """A server with a token and the dashboard, serving ``tabular``."""
    with serving(ServeConfig(token=TOKEN), pipelines=["tabular"], dashboard=True) as live:
        yield live


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[httpx.Client]:
    # NOTE: a connection per request: Panel's component route fails on a made-up path (a 500 that closes its
    # connection), and a request sent on that connection would fail for a reason that is not access.
    with httpx.Client(base_url=served.url, timeout=60.0, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        yield http


HTTP_ROUTES = sorted((method, path, access) for (kind, method, path), access in EXPECTED.items()
                     if kind == "http")


@pytest.mark.parametrize(("method", "path", "access"), HTTP_ROUTES, ids=[f"{m} {p}" for m, p, _ in HTTP_ROUTES])
def test_each_route_needs_the_token_iff_it_is_control(client: httpx.Client, method: str, path: str,
                                                      access: Access) -> None:
    # NOTE: names are "x", so that nothing deployed is touched; a body-less call is refused before it is read.
    concrete = sample_path(path)
    without = client.request(method, concrete)
    assert (without.status_code == 401) is (access is CONTROL), (without.status_code, without.text)
    if access is CONTROL:
        assert without.headers["www-authenticate"] == "Bearer"
    given = client.request(method, concrete, headers={"Authorization": f"Bearer {TOKEN}"})
    assert given.status_code != 401, given.text


@pytest.mark.parametrize("page", ["/dashboard", "/dashboard/controls"])
def test_the_dashboard_websockets_need_the_cookie(served: Served, page: str) -> None:
    address = served.url.replace("http://", "ws://") + f"{page}/ws"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        websockets.sync.client.connect(address, open_timeout=30)
    assert refused.value.response.status_code == 403
    with pytest.raises(websockets.exceptions.InvalidStatus):
        websockets.sync.client.connect(address, open_timeout=30,
                                       additional_headers={"Cookie": f"{COOKIE}=not-the-digest"})


def test_the_repository_cannot_be_emptied_without_the_token(served: Served, client: httpx.Client) -> None:
    for path in ("/v2/repository/models/tabular/unload", "/v2/repository/models/text/load", "/v2/repository/index"):
        answer = client.post(path)
        assert answer.status_code == 401, answer.text
    assert served.engine.names() == ["tabular"]
    ready = client.get("/v2/models/tabular/ready")
    assert ready.status_code == 200, ready.text
    index = client.post("/v2/repository/index", headers={"Authorization": f"Bearer {TOKEN}"})
    assert index.status_code == 200 and {"name": "tabular", "state": "READY"}.items() <= \
        next(m for m in index.json() if m["name"] == "tabular").items()


def test_the_dashboard_takes_the_token_once(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=60.0, follow_redirects=True) as browser:
        page = browser.get(f"/dashboard?token={TOKEN}")
        assert [r.status_code for r in page.history] == [303] and page.url.path == "/dashboard"
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert browser.cookies[COOKIE] == cookie_value(TOKEN)
