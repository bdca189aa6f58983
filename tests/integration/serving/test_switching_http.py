"""The switching policy and shadow traffic through the control API, over real HTTP, as OpenAPI documents them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from loopback import text_request
from servers import Served, serving
from waiting import eventually

# NOTE: FastAPI 0.165 deprecates ORJSONResponse, which the app still uses: the server thread would turn
# every JSON answer into a 500 under this suite's warnings-as-errors.
pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")

POLICY = "/api/pipelines/text/policy"
SHADOW = "/api/pipelines/text/shadow"


@pytest.fixture(scope="module")
def served(demo_home: object) -> Iterator[Served]:
    with serving(inprocess=True, pipelines=("text",)) as server:
        yield server


def test_policy_is_set_checked_and_shown_in_stats(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=60) as http:
        refused = http.put(POLICY, json={"policy": "cheapest"})
        assert refused.status_code == 400 and "policy" in refused.json()["error"]
        # NOTE: the default latency budget is the target a policy falls back to: without it, there is none.
        cleared = http.put("/api/pipelines/text/latency-target", json={"target_p99_ms": None})
        assert cleared.status_code == 200, cleared.text
        no_target = http.put(POLICY, json={"policy": "best-quality-within-target"})
        assert no_target.status_code == 400 and "needs a latency target" in no_target.json()["error"]
        unknown = http.put(POLICY, json={"policy": "best-quality-within-target", "target_p99_ms": 500,
                                         "candidates": ["fp32", "fp16"]})
        assert unknown.status_code == 404 and "fp16" in unknown.json()["error"]

        body = {"policy": "best-quality-within-target", "target_p99_ms": 500, "candidates": ["fp32", "int8"],
                "dwell_s": 30, "margin": 0.3}
        answer = http.put(POLICY, json=body)
        assert answer.status_code == 200, answer.text
        view = answer.json()
        assert view["policy"] == "best-quality-within-target" and view["target_p99_ms"] == 500
        assert view["rules"]["dwell_s"] == 30 and view["rules"]["margin"] == 0.3
        assert set(view["profiles"]) == {"fp32", "int8"} and view["profiles"]["int8"]["batches"] > 0
        assert http.post("/v2/models/text/infer", json=text_request(["The striker scored twice"])).status_code == 200
        switching = eventually(lambda: http.get("/api/pipelines/text/stats").json()["switching"]["candidates"],
                               30, "a first decision")
        assert [c["variant"] for c in switching] == ["fp32", "int8"]
        assert all(c["predicted_p99_ms"] is not None and c["quality"] is not None for c in switching)
        metrics = http.get("/metrics").text
        assert 'workbench_switching_predicted_p99_ms{pipeline="text",variant="int8"}' in metrics
        assert 'workbench_switches_total{pipeline="text"} 0.0' in metrics

        fixed = http.put(POLICY, json={"policy": "fixed"})
        assert fixed.status_code == 200 and fixed.json()["policy"] == "fixed"
        events = [e["event"] for e in http.get("/api/pipelines/text/stats").json()["events"]]
        assert events.count("switching_policy") == 2 and "switching_calibrated" in events


def test_shadow_starts_reports_and_stops_over_http(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=60) as http:
        assert http.put(SHADOW, json={"variant": "int8", "fraction": 2}).status_code == 400
        started = http.put(SHADOW, json={"variant": "int8", "fraction": 1.0})
        assert started.status_code == 200, started.text
        assert started.json()["variant"] == "int8" and started.json()["running"]
        for text in ("The striker scored twice", "The central bank raised interest rates"):
            answer = http.post("/v2/models/text/infer", json=text_request([text]))
            assert answer.status_code == 200
            assert answer.json()["model_version"] == "fp32"
        eventually(lambda: http.get("/api/pipelines/text/stats").json()["shadow"]["compared"] == 2, 30,
                   "two mirrored requests compared")
        rate = http.get("/api/pipelines/text/stats").json()["shadow"]["agreement"]["rate"]
        metrics = http.get("/metrics").text
        assert 'workbench_shadow_compared_total{pipeline="text",variant="int8"} 2.0' in metrics
        assert f'workbench_shadow_agreement_ratio{{pipeline="text",variant="int8"}} {rate:.1f}' in metrics
        stopped = http.delete(SHADOW)
        assert stopped.status_code == 200
        assert stopped.json()["stopped"] and stopped.json()["report"]["agreement"]["rows"] == 2
        assert http.delete(SHADOW).json() == {"name": "text", "stopped": False, "report": None}


def test_openapi_documents_the_routes(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=60) as http:
        paths = http.get("/openapi.json").json()["paths"]
    assert "best-quality-within-target" in paths["/api/pipelines/{name}/policy"]["put"]["summary"]
    assert {"put", "delete"} <= set(paths["/api/pipelines/{name}/shadow"])
