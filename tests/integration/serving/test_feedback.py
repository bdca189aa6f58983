"""The feedback loop over real HTTP: ids answered, labels posted by id, live accuracy per variant, a durable log.

The server runs the tabular pipeline in-process; the prediction log is a file of
this test's own, kept across a restart of the server.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from loopback import tabular_request
from servers import Served, serving

# NOTE: FastAPI 0.165 deprecates ORJSONResponse, which the app still uses: the server thread would turn
# every JSON answer into a 500 under this suite's warnings-as-errors.
pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")

INFER = "/v2/models/tabular/infer"
ROWS = np.random.default_rng(6).normal(size=(16, 30)).astype(np.float32)
OTHER = {"malignant": "benign", "benign": "malignant"}


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "log" / "predictions.sqlite"
    monkeypatch.setenv("WORKBENCH_PREDICTION_LOG", f"sqlite:///{path}")
    return path


@pytest.fixture
def served(demo_home: object, log_file: Path) -> Iterator[Served]:
    with serving(inprocess=True, pipelines=("tabular",)) as server:
        yield server


def _infer(http: httpx.Client, row: np.ndarray, request_id: str | None = None) -> tuple[str, str, str]:
    body = tabular_request(row[None, :])
    if request_id is not None:
        body["id"] = request_id
    answer = http.post(INFER, json=body)
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    label = next(o["data"][0] for o in reply["outputs"] if o["name"] == "label")
    return reply["id"], reply["model_version"], label


def test_labels_by_id_give_the_hand_computed_accuracy_per_variant_and_the_log_survives_a_restart(
        served: Served, log_file: Path) -> None:
    answered: list[tuple[str, str, str]] = []
    with httpx.Client(base_url=served.url, timeout=60) as http:
        for i, row in enumerate(ROWS[:8]):
            answered.append(_infer(http, row, request_id=f"client-{i}" if i % 2 else None))
        swap = http.post("/api/pipelines/tabular/swap", json={"variant": "logreg"})
        assert swap.status_code == 200, swap.text
        answered += [_infer(http, row) for row in ROWS[8:]]
        assert all(a[0] for a in answered) and answered[1][0] == "client-1"
        assert {a[1] for a in answered[:8]} == {"gbt"} and {a[1] for a in answered[8:]} == {"logreg"}

        # NOTE: the truth is made up by hand: every third labelled request is wrong, whatever the model said
        labelled = answered[::2] + answered[9::4]
        truth = {rid: (OTHER[label] if k % 3 == 0 else label) for k, (rid, _, label) in enumerate(labelled)}
        expected: dict[str, list[bool]] = {}
        for rid, version, label in labelled:
            expected.setdefault(version, []).append(truth[rid] == label)

        one = http.post("/api/pipelines/tabular/feedback",
                        json={"labels": [{"id": labelled[0][0], "label": truth[labelled[0][0]]}]})
        assert one.status_code == 200, one.text
        assert one.json()["accepted"] == 1
        bulk = http.post("/api/pipelines/tabular/feedback", json={"labels": [
            {"id": rid, "label": label} for rid, label in truth.items()] + [{"id": "never-sent", "label": "benign"}]})
        assert bulk.status_code == 200, bulk.text
        assert bulk.json()["accepted"] == len(truth) and bulk.json()["unknown"] == ["never-sent"]

        quality = http.get("/api/pipelines/tabular/quality").json()
        assert quality["output"] == "label"
        for version, hits in expected.items():
            scores = quality["variants"][version]
            assert scores["count"] == len(hits), version
            assert scores["accuracy"] == pytest.approx(sum(hits) / len(hits)), version
        assert http.get("/api/pipelines/tabular/stats").json()["quality"] == quality

        bad = http.post("/api/pipelines/tabular/feedback", json={"labels": [{"id": "x"}]})
        assert bad.status_code == 400

    # -- restart on the same log file --------------------------------------------------
    with serving(inprocess=True, pipelines=("tabular",)) as again, \
            httpx.Client(base_url=again.url, timeout=60) as http:
        assert http.get("/api/pipelines/tabular/quality").json() == quality
        _infer(http, ROWS[0], request_id="after-restart")
        export = http.get("/api/pipelines/tabular/predictions.parquet")
        assert export.status_code == 200, export.text
        rows = pq.read_table(io.BytesIO(export.content)).to_pylist()
    ids = [r["request_id"] for r in rows]
    assert ids == [a[0] for a in answered] + ["after-restart"]
    by_id = {r["request_id"]: r for r in rows}
    assert {rid: orjson.loads(by_id[rid]["label"]) for rid in truth} == truth
    assert orjson.loads(by_id["client-1"]["inputs"])["features"][0] == pytest.approx(ROWS[1].tolist())
    assert all(r["latency_ms"] > 0 and r["pipeline"] == "tabular" for r in rows)
    assert log_file.exists()
