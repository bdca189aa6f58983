"""The dashboard in a real browser, against a real server with traffic flowing.

The server is ``workbench serve``'s app on a loopback port with the tabular pipeline on a
LocalCluster of one worker, scored for drift against its training rows; the traffic lab sends
it Poisson traffic. The page must update live, its controls must change the server (read back
over the control API and the V2 API), its monitoring panels must show what the server
reports, and it must raise no error in the browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from browsing import Page, open_page
from loopback import LiveServer, live_server
from waiting import eventually

from workbench.demo.tabular import load_tabular_data
from workbench.engine import Engine
from workbench.serving.app import ServeConfig
from workbench.ui.hub import Hub

TOKEN = "browser-test-token"


@pytest.fixture(scope="module")
def served(demo_home: object) -> Iterator[LiveServer]:
    async def start() -> Engine:
        return await Engine.local(1, 1)

    with live_server(start, ServeConfig(targets=["tabular"])) as live:
        async def start_traffic() -> None:
            await live.engine.set_reference("tabular", {"features": load_tabular_data().x_train})
            Hub.of_app(live.app).lab.start("tabular", "poisson", 80)

        live.call(start_traffic)
        yield live


@pytest.fixture
def page(browser: Any, served: LiveServer) -> Iterator[Page]:
    with open_page(browser, f"{served.url}/dashboard") as opened:
        yield opened
        assert opened.errors == [], opened.errors


def batching(served: LiveServer) -> dict[str, Any]:
    pipelines = httpx.get(f"{served.url}/api/pipelines", timeout=30).json()
    return dict(next(p for p in pipelines if p["name"] == "tabular")["batching"])


def test_the_latency_chart_updates_live(page: Page) -> None:
    count, last = eventually(lambda: (p := page.points("latency-source"))[0] >= 1 and p)
    eventually(lambda: page.points("latency-source")[0] >= count + 2 and page.points("latency-source")[1] > last,
               timeout_s=15)
    readout = page.page.locator(".wb-latency-figures").inner_text()
    assert "p50" in readout and "p99" in readout
    eventually(lambda: (page.last("latency-source", "p50") or 0) > 0)
    eventually(lambda: (page.last("latency-source", "throughput") or 0) > 10)
    assert page.page.locator(".wb-dashboard").get_by_text("Dask dashboard").count() >= 1
    page.screenshot("dashboard-under-load")


def test_the_monitoring_panels_show_drift_and_business_metrics(page: Page, served: LiveServer) -> None:
    drift = page.page.locator(".wb-drift-status")
    eventually(lambda: "426 reference rows" in drift.inner_text() and "collecting" not in drift.inner_text(),
               timeout_s=30)
    stats = httpx.get(f"{served.url}/api/pipelines/tabular/stats", timeout=30).json()
    worst = stats["drift"]["worst"][0]["feature"]
    eventually(lambda: worst in page.page.locator(".wb-drift-table").inner_text())
    business = page.page.locator(".wb-business-table")
    eventually(lambda: "risk" in business.inner_text() and "high" in business.inner_text()
               and "%" in business.inner_text())
    assert "malignant" in business.inner_text() and "gbt" in business.inner_text()
    assert "a share moved" not in page.page.locator(".wb-business-status").inner_text()
    # NOTE: the browser tests run with the prediction log off: the quality panel says so.
    assert "prediction log is off" in page.page.locator(".wb-quality-status").inner_text()
    page.screenshot("dashboard-monitoring")


def test_the_batch_size_slider_changes_the_server_batching(page: Page, served: LiveServer) -> None:
    before = batching(served)["max_batch_size"]
    handle = page.page.locator(".wb-max-batch-size .noUi-handle").first
    handle.focus()
    for _ in range(4):
        page.page.keyboard.press("ArrowLeft")
    eventually(lambda: batching(served)["max_batch_size"] == before - 4)
    # NOTE: and the chart shows the new knob within seconds.
    eventually(lambda: page.last("batches-source", "max_batch_size") == before - 4, timeout_s=10)
    page.screenshot("dashboard-batch-size-moved")


def test_swapping_the_variant_changes_the_served_version(page: Page, served: LiveServer) -> None:
    metadata = httpx.get(f"{served.url}/v2/models/tabular", timeout=30).json()
    assert metadata["parameters"]["active_version"] == "gbt"
    page.page.locator(".wb-variant select").first.select_option(label="model: logreg")
    eventually(lambda: httpx.get(f"{served.url}/v2/models/tabular", timeout=30).json()["parameters"][
        "active_version"] == "logreg", timeout_s=90)
    rows = np.zeros((1, 30), dtype=np.float32)
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": rows.ravel().tolist()}]}
    answer = httpx.post(f"{served.url}/v2/models/tabular/infer", json=body, timeout=30).json()
    assert answer["model_version"] == "logreg"
    page.page.get_by_text("swap of tabular to logreg done").wait_for(timeout=15_000)
    eventually(lambda: "logreg" in page.page.locator(".wb-kpis").inner_text(), timeout_s=10)
    page.screenshot("dashboard-variant-swapped")


def test_the_placement_control_moves_the_pipeline_and_says_why(page: Page, served: LiveServer) -> None:
    def where() -> str:
        pipelines = httpx.get(f"{served.url}/api/pipelines", timeout=30).json()
        return str(next(p for p in pipelines if p["name"] == "tabular")["where"])

    placed = page.page.locator(".wb-placed")
    # NOTE: auto put the light tabular pipeline in the serving process, and the page says on what figures.
    assert where() == "embedded"
    eventually(lambda: "runs in this process" in placed.inner_text() and "trip" in placed.inner_text())
    page.page.locator(".wb-placement select").first.select_option(label="fused")
    eventually(lambda: where() == "remote", timeout_s=30)
    eventually(lambda: "runs on the workers" in placed.inner_text(), timeout_s=15)
    page.page.get_by_text("placement of tabular: fused done").wait_for(timeout=15_000)
    page.screenshot("dashboard-placement-fused")
    page.page.locator(".wb-placement select").first.select_option(label="auto")
    eventually(lambda: where() == "embedded", timeout_s=30)
    eventually(lambda: "runs in this process" in placed.inner_text(), timeout_s=15)


def test_with_a_token_the_dashboard_takes_it_once_then_a_cookie(browser: Any, demo_home: object) -> None:
    async def start() -> Engine:
        return Engine.inprocess()

    with live_server(start, ServeConfig(targets=["tabular"], token=TOKEN)) as live:
        assert httpx.get(f"{live.url}/dashboard", timeout=30).status_code == 401
        with open_page(browser, f"{live.url}/dashboard?token={TOKEN}") as page:
            assert page.page.url == f"{live.url}/dashboard"
            # NOTE: no traffic yet: the lab's start button sends it, and the throughput chart shows it.
            page.page.locator(".wb-traffic-start button").first.click()
            eventually(lambda: (page.last("throughput-source", "throughput") or 0) > 10, timeout_s=20)
            page.screenshot("dashboard-with-token")
            assert page.errors == [], page.errors
