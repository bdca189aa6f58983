"""``GET /metrics`` over real HTTP: what the server answered, counted by route, model and status, and by the engine.

The server runs the tabular pipeline in-process (the metrics do not depend on
where batches run, and this keeps the test to one process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from loopback import LiveServer, live_server, tabular_request
from prometheus_client.parser import text_string_to_metric_families

from workbench.serving.app import ServeConfig
from workbench.serving.server import engine_factory

# NOTE: FastAPI 0.165 deprecates ORJSONResponse, which the app still uses: the server thread would turn
# every JSON answer into a 500 under this suite's warnings-as-errors.
pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")

INFER = "/v2/models/{name}/infer"
ROWS = np.random.default_rng(0).random((2, 30), dtype=np.float32)


@pytest.fixture(scope="module")
def server(demo_home: Path) -> Iterator[LiveServer]:
    with live_server(engine_factory(None, 0, inprocess=True), ServeConfig(targets=["tabular"])) as live:
        yield live


def scrape(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_what_the_server_answered(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        before = scrape(http)
        good = [http.post("/v2/models/tabular/infer", json=tabular_request(ROWS)) for _ in range(3)]
        bad = http.post("/v2/models/tabular/infer", json=tabular_request(ROWS[:, :29]))
        unknown = http.post("/v2/models/nope/infer", json=tabular_request(ROWS))
        after = scrape(http)
    assert [r.status_code for r in good] == [200] * 3
    assert (bad.status_code, unknown.status_code) == (400, 404)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    http_requests = "workbench_http_requests_total"
    assert added(http_requests, method="POST", route=INFER, model="tabular", code="200") == 3
    assert added(http_requests, method="POST", route=INFER, model="tabular", code="400") == 1
    assert added(http_requests, method="POST", route=INFER, model="", code="404") == 1, "no series per made-up name"
    assert added(http_requests, method="GET", route="/metrics", model="", code="200") == 1, "the first scrape"
    assert added("workbench_http_request_duration_seconds_count", method="POST", route=INFER) == 5

    assert added("workbench_requests_completed_total", pipeline="tabular") == 3
    assert added("workbench_requests_failed_total", pipeline="tabular", code="400") == 1
    assert added("workbench_request_duration_seconds_count", pipeline="tabular") == 3
    stages = {dict(labels)["stage"] for name, labels in after if name == "workbench_stage_duration_seconds_count"}
    assert {"queue", "batch_formation", "impute", "model", "label"} <= stages
    assert value(after, "workbench_active_variant_info", pipeline="tabular", stage="model", variant="gbt") == 1
    assert value(after, "workbench_workers", pipeline="tabular") == 1
    assert value(after, "workbench_queue_depth", pipeline="tabular") == 0
