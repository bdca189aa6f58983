"""Embedded or remote on a real LocalCluster: ``auto`` decides from measured cost, a move drops no request.

The tabular demo (a fraction of a millisecond a batch) costs less than a trip to a worker and runs in the
serving process; the text demo (a MiniLM encoder) stays on the workers. The reasons and figures show in the
stats, the deployment's events and ``/metrics``; a move under traffic loses nothing; offline batch works
for both kinds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from workbench.api import Workbench
from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import load_tabular_data
from workbench.pipeline import Pipeline

ROWS = load_tabular_data().x_test[:40]
SENTENCES = topic_sentences("test")[0][:8]


@pytest.fixture(scope="module")
def wb(demo_home: object) -> Iterator[Workbench]:
    with Workbench.local(workers=2) as workbench:
        workbench.deploy("tabular")
        workbench.deploy("text")
        yield workbench


def test_auto_runs_the_light_pipeline_here_and_the_heavy_one_on_the_workers(wb: Workbench) -> None:
    tabular, text = wb.stats("tabular")["placed"], wb.stats("text")["placed"]
    assert (tabular["placement"], tabular["where"]) == ("auto", "embedded"), tabular
    assert (text["placement"], text["where"]) == ("auto", "remote"), text
    # NOTE: each decision carries the figures it was taken on: compute against the trip, both measured.
    for placed in (tabular, text):
        decision = placed["decision"]
        assert decision["compute_ms"] > 0 and decision["trip_ms"] > 0, decision
    assert tabular["decision"]["compute_ms"] < tabular["decision"]["trip_ms"]
    assert "less than its trip to a worker" in tabular["decision"]["reason"]
    assert text["decision"]["compute_ms"] > text["decision"]["trip_ms"]
    deployed = [e for e in wb.stats("tabular")["events"] if e["event"] == "deployed"][-1]
    assert deployed["where"] == "embedded" and "trip" in deployed["reason"]
    assert wb.describe()["deployments"]["text"]["where"] == "remote"
    # NOTE: workers hold an embedded deployment too: a move back to them needs no load.
    assert len(wb.stats("tabular")["workers"]) == 2


def test_an_embedded_pipeline_answers_as_the_pipeline_does_without_the_trip(
        wb: Workbench, tabular_pipeline: Pipeline) -> None:
    result = wb.predict("tabular", {"features": ROWS[:5]})
    expected = tabular_pipeline.predict({"features": ROWS[:5]})
    np.testing.assert_array_equal(result["label"], expected["label"])
    np.testing.assert_allclose(result["probability"], expected["probability"], atol=1e-6)
    assert "transfer" not in result.timings_ms and "worker_queue" not in result.timings_ms
    text = wb.predict("text", {"text": SENTENCES[:2]})
    assert {"transfer", "worker_queue"} <= set(text.timings_ms)


def test_placement_shows_in_metrics(wb: Workbench) -> None:
    text = wb.metrics_text()
    assert 'workbench_placement_info{pipeline="tabular",placement="auto",where="embedded"} 1.0' in text
    assert 'workbench_placement_info{pipeline="text",placement="auto",where="remote"} 1.0' in text
    assert 'workbench_placement_cost_seconds{part="trip",pipeline="text"}' in text
    assert 'workbench_placement_cost_seconds{part="compute",pipeline="tabular"}' in text


async def test_moving_a_pipeline_under_traffic_drops_no_request(wb: Workbench, tabular_pipeline: Pipeline) -> None:
    wb.deploy("tabular", name="moving", placement="fused")
    try:
        expected = tabular_pipeline.predict({"features": ROWS})
        stop = asyncio.Event()
        answered: list[int] = []

        async def client(first: int) -> None:
            i = first
            while not stop.is_set():
                result = await wb.apredict("moving", {"features": ROWS[i % 40:i % 40 + 1]})
                np.testing.assert_array_equal(result["label"], expected["label"][i % 40:i % 40 + 1])
                answered.append(i)
                i += 7

        clients = [asyncio.ensure_future(client(k)) for k in range(6)]
        wheres = []
        for placement in ("inprocess", "fused", "auto", "by-resource", "inprocess"):
            await asyncio.sleep(0.3)
            placed = await asyncio.to_thread(wb.set_placement, "moving", placement)
            wheres.append(placed["where"])
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*clients)  # NOTE: a request lost or failed would raise here
        assert wheres == ["embedded", "remote", "embedded", "remote", "embedded"]
        stats = wb.stats("moving")
        assert stats["errors_total"] == 0 and len(answered) > 50
        assert stats["requests_total"] >= len(answered)
        moves = [e["placement"] for e in stats["events"] if e["event"] == "placement"]
        assert moves == ["inprocess", "fused", "auto", "by-resource", "inprocess"]
    finally:
        wb.undeploy("moving")


def test_offline_batch_runs_on_the_workers_for_an_embedded_deployment(
        wb: Workbench, tabular_pipeline: Pipeline) -> None:
    import pandas as pd

    frame = pd.DataFrame(ROWS, columns=[f"f{i}" for i in range(30)])
    report = wb.batch("tabular", frame, columns=list(frame.columns), progress=False)
    assert report.backend == "dask" and report.rows == 40 and isinstance(report.output, pd.DataFrame)
    np.testing.assert_array_equal(report.output["label"].to_numpy(dtype=object),
                                  tabular_pipeline.predict({"features": ROWS})["label"])


def test_an_unknown_placement_is_refused_and_changes_nothing(wb: Workbench) -> None:
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="placement must be one of"):
        wb.set_placement("tabular", "everywhere")
    assert wb.stats("tabular")["placed"]["where"] == "embedded"
