"""The dashboard's routes in the serving app, and its token guard (``?token=`` once, then a cookie)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from workbench.engine import Engine
from workbench.serving.access import COOKIE, AccessGuard, cookie_value
from workbench.serving.app import ServeConfig, create_app

TOKEN = "s3cret-token"


def guarded() -> FastAPI:
    app = FastAPI()

    @app.get("/dashboard")
    async def page() -> dict[str, str]:
        return {"page": "dashboard"}

    @app.get("/dashboard/latency")
    async def component() -> dict[str, str]:
        return {"page": "latency"}

    @app.get("/v2/models/x")
    async def other() -> dict[str, str]:
        return {"page": "other"}

    @app.websocket("/dashboard/ws")
    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    app.add_middleware(AccessGuard, token=TOKEN)
    return app


@pytest.fixture
async def http() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded()), base_url="http://test")


async def test_without_the_token_the_dashboard_says_how_to_get_in(http: httpx.AsyncClient) -> None:
    answer = await http.get("/dashboard")
    assert answer.status_code == 401 and "/dashboard?token=" in answer.json()["error"]
    assert (await http.get("/dashboard?token=wrong")).status_code == 401
    assert (await http.get("/dashboard/latency")).status_code == 401
    assert (await http.get("/dashboardish")).status_code == 401  # NOTE: no rule names it: control
    assert (await http.get("/v2/models/x")).status_code == 200


async def test_the_token_once_becomes_a_cookie_and_leaves_the_address(http: httpx.AsyncClient) -> None:
    answer = await http.get(f"/dashboard?pipeline=text&token={TOKEN}")
    assert answer.status_code == 303 and answer.headers["location"] == "dashboard?pipeline=text"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={cookie_value(TOKEN)};")
    assert "HttpOnly" in cookie
    assert TOKEN not in cookie
    http.cookies.set(COOKIE, cookie_value(TOKEN))
    assert (await http.get("/dashboard")).json() == {"page": "dashboard"}
    assert (await http.get("/dashboard/latency")).json() == {"page": "latency"}
    assert (await http.get(f"/dashboard/latency?token={TOKEN}")).headers["location"] == "latency"


async def test_a_bearer_token_works_too(http: httpx.AsyncClient) -> None:
    answer = await http.get("/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.json() == {"page": "dashboard"}


def test_the_websocket_needs_the_cookie() -> None:
    client = TestClient(guarded())
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/dashboard/ws"):
        pass
    client.cookies.set(COOKIE, cookie_value(TOKEN))
    with client.websocket_connect("/dashboard/ws") as socket:
        assert socket.receive_text() == "hello"


def test_the_serving_app_mounts_the_dashboard_and_each_component() -> None:
    async def start() -> Engine:
        return Engine.inprocess()

    paths = {getattr(route, "path", None) for route in create_app(start, ServeConfig()).routes}
    assert {"/dashboard", "/dashboard/ws", "/dashboard/latency", "/dashboard/controls", "/dashboard/traffic",
            "/favicon.ico"} <= paths
    bare = {getattr(route, "path", None) for route in create_app(start, ServeConfig(dashboard=False)).routes}
    assert not any(str(path).startswith("/dashboard") for path in bare)
