"""The Dask backend on a real LocalCluster of worker processes, checked against the in-process pipeline.

One cluster of two workers (three for a while, when a worker joins late) serves
every test of this module; each test deploys under its own name when it changes
what is deployed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import dask.config
import numpy as np
import pytest
from waiting import eventually

from workbench.api import Workbench
from workbench.backend.dask import HOUSEKEEPING
from workbench.backend.worker import EVENTS_TOPIC, plugin_name
from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import load_tabular_data
from workbench.errors import InvalidInput, NotDeployed, StageFailed, WorkbenchError
from workbench.models import usable_providers
from workbench.pipeline import Pipeline
from workbench.pipeline.custom import FunctionStage
from workbench.pipeline.graph import Prediction

ROWS = load_tabular_data().x_test[:40]
SENTENCES = topic_sentences("test")[0][:24]
# NOTE: the encoder asks for a GPU and gets the best provider that works here; the head runs on the CPU.
EXPECTED_PROVIDER = {"encoder": usable_providers()[0], "head": "CPUExecutionProvider"}


@pytest.fixture(scope="module")
def wb(demo_home: object) -> Iterator[Workbench]:
    with Workbench.local(workers=2) as workbench:
        # NOTE: on the workers, whatever auto would choose: this module tests the worker path.
        workbench.deploy("tabular", batching={"max_batch_size": 16, "max_delay_ms": 20}, placement="fused")
        workbench.deploy("text", placement="fused")
        # NOTE: a deployment announces its execution providers once each worker has it warm.
        eventually(lambda: all(w["providers"] for n in ("tabular", "text") for w in workbench.stats(n)["workers"]),
                   what="providers reported by both workers")
        yield workbench


@pytest.fixture(scope="module")
def inprocess(demo_home: object) -> Iterator[Workbench]:
    with Workbench.inprocess() as workbench:
        workbench.deploy("tabular")
        workbench.deploy("text")
        yield workbench


def assert_tabular_equal(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert (ours["label"] == reference["label"]).all()
    assert (ours["risk_bucket"] == reference["risk_bucket"]).all()
    np.testing.assert_allclose(ours["probabilities"], reference["probabilities"], atol=1e-6)


def assert_text_equal(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert (ours["topic"] == reference["topic"]).all()
    np.testing.assert_allclose(ours["confidence"], reference["confidence"], atol=1e-5)


def _housekeeping_seen() -> dict[str, str]:
    return {key: dask.config.get(key) for key in HOUSEKEEPING}


# -- results ----------------------------------------------------------------------------
def test_tabular_equals_the_inprocess_pipeline(wb: Workbench, tabular_pipeline: Pipeline) -> None:
    assert_tabular_equal(wb.predict("tabular", {"features": ROWS}).outputs,
                         tabular_pipeline.predict({"features": ROWS}).outputs)


def test_text_equals_the_inprocess_pipeline(wb: Workbench, text_pipeline: Pipeline) -> None:
    assert_text_equal(wb.predict("text", {"text": SENTENCES}).outputs,
                      text_pipeline.predict({"text": SENTENCES}).outputs)


def test_placement_by_resource_gives_the_same_results(wb: Workbench, text_pipeline: Pipeline) -> None:
    wb.deploy("text", name="text-split", placement="by-resource")
    try:
        prediction = wb.predict("text-split", {"text": SENTENCES[:6]})
        assert_text_equal(prediction.outputs, text_pipeline.predict({"text": SENTENCES[:6]}).outputs)
        ran = {label for worker in wb.stats("text-split")["workers"] for label in worker["ran"]}
        assert ran == {"tokenize", "encoder", "head+label"}
    finally:
        wb.undeploy("text-split")


def test_inprocess_workbench_gives_the_same_results(wb: Workbench, inprocess: Workbench) -> None:
    assert_tabular_equal(wb.predict("tabular", {"features": ROWS}).outputs,
                         inprocess.predict("tabular", {"features": ROWS}).outputs)
    assert_text_equal(wb.predict("text", {"text": SENTENCES}).outputs,
                      inprocess.predict("text", {"text": SENTENCES}).outputs)
    assert inprocess.stats("text")["backend"] == "inprocess"
    assert inprocess.dashboard_link is None


async def test_concurrent_requests_share_batches_and_get_their_own_rows(
    wb: Workbench, tabular_pipeline: Pipeline
) -> None:
    before = wb.stats("tabular")
    # NOTE: one to three rows per request, so a row that went to the wrong request cannot go unnoticed.
    requests = [ROWS[i % 37:i % 37 + 1 + i % 3] for i in range(48)]
    results = await asyncio.gather(*(wb.apredict("tabular", {"features": rows}) for rows in requests))
    for rows, result in zip(requests, results, strict=True):
        assert_tabular_equal(result.outputs, tabular_pipeline.predict({"features": rows}).outputs)
    after = wb.stats("tabular")
    assert after["requests_total"] - before["requests_total"] == 48
    assert after["batches_total"] - before["batches_total"] < 48, "no two requests shared a batch"


def test_timings_cover_the_whole_path(wb: Workbench) -> None:
    for name, inputs, stages in (
        ("tabular", {"features": ROWS[:2]}, ("impute", "clip", "standardize", "model", "label", "risk")),
        ("text", {"text": SENTENCES[:2]}, ("tokenize", "encoder", "head", "label")),
    ):
        timings = wb.predict(name, inputs).timings_ms
        assert set(timings) >= {"queue", "batch_formation", "transfer", "total", *stages}, name
        assert all(value >= 0 for value in timings.values()), timings
        assert timings["total"] >= sum(timings[stage] for stage in stages)


def test_stats_show_workers_and_providers(wb: Workbench) -> None:
    stats = wb.stats("text")
    assert stats["backend"] == "dask"
    workers = stats["workers"]
    assert len(workers) == 2
    for worker in workers:
        assert worker["address"].startswith("tcp://")
        assert worker["providers"] == EXPECTED_PROVIDER
        assert worker["nthreads"] == 1
    assert set(wb.describe()["workers"]) == {w["address"] for w in workers}


# -- warm sessions and workers ----------------------------------------------------------
async def _held(address: str, deployment: str) -> dict[str, Any]:
    from distributed import Client

    def identities(dask_worker: Any, plugin: str = plugin_name(deployment, 1)) -> dict[str, int]:
        held = dask_worker.plugins[plugin]
        sessions = {s.name: id(s.loaded.session) for s in held.pipeline.inference_stages}
        return {"plugin": id(held), "pipeline": id(held.pipeline), **sessions}

    async with Client(address, asynchronous=True) as client:
        events = await client.get_events(EVENTS_TOPIC)
        ready = [e for _, e in events if e["event"] == "ready" and e["deployment"] == deployment]
        return {"identities": await client.run(identities), "ready": len(ready)}


async def test_sessions_stay_warm_across_calls(wb: Workbench) -> None:
    scheduler = wb.describe()["scheduler"]
    before = await _held(scheduler, "text")
    for _ in range(6):
        await wb.apredict("text", {"text": SENTENCES[:3]})
    await asyncio.gather(*(wb.apredict("text", {"text": [s]}) for s in SENTENCES))
    after = await _held(scheduler, "text")
    assert len(before["identities"]) == 2
    assert after["identities"] == before["identities"]
    # NOTE: a worker announces a deployment once, when it has built it: no call built it again.
    assert after["ready"] == before["ready"] >= 2


def test_a_worker_that_joins_later_gets_the_deployments_and_batches(wb: Workbench) -> None:
    cluster = wb.engine.backend.cluster  # type: ignore[attr-defined]
    old = {w["address"] for w in wb.stats("tabular")["workers"]}
    cluster.scale(3)
    try:
        eventually(lambda: len(wb.stats("tabular")["workers"]) == 3 and len(wb.stats("text")["workers"]) == 3,
                   what="the third worker holding both deployments")
        (new,) = {w["address"] for w in wb.stats("tabular")["workers"]} - old
        assert wb.stats("tabular")["config"]["max_in_flight"] == 3 * 2  # NOTE: two batches per worker thread

        def ran_on_new() -> bool:
            wb.predict("tabular", {"features": ROWS[:2]})
            return any(w["address"] == new and w["ran"] for w in wb.stats("tabular")["workers"])

        eventually(ran_on_new, timeout_s=30, what="a batch on the new worker")
        provider = next(w["providers"] for w in wb.stats("text")["workers"] if w["address"] == new)
        assert provider == EXPECTED_PROVIDER
        # NOTE: a worker started by scaling keeps the cluster's housekeeping cadence too.
        client = wb.engine.backend.client  # type: ignore[attr-defined]
        cadence = wb._call(client.run, _housekeeping_seen, workers=[new])
        assert cadence == {new: HOUSEKEEPING}
    finally:
        cluster.scale(2)
        eventually(lambda: len(wb.stats("tabular")["workers"]) == 2, what="back to two workers")
    assert wb.predict("tabular", {"features": ROWS[:5]})["label"].shape == (5,)


async def test_a_killed_worker_is_restarted_warm_and_no_request_is_lost(wb: Workbench) -> None:
    from distributed import Client

    async with Client(wb.describe()["scheduler"], asynchronous=True) as client:
        pids = await client.run(os.getpid)
    victim = min(pids)

    async def one(i: int) -> object:
        try:
            return await asyncio.wait_for(wb.apredict("text", {"text": [SENTENCES[i % len(SENTENCES)]]}), 60)
        except (WorkbenchError, TimeoutError) as exc:
            return exc

    tasks = []
    for i in range(120):
        tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.sleep(0.003)
        if i == 30:
            # NOTE: the worker process itself, not its nanny: the nanny starts a new one.
            os.kill(pids[victim], signal.SIGKILL)
    answers = await asyncio.gather(*tasks)
    failures = [a for a in answers if not isinstance(a, Prediction)]
    assert not failures, failures[:3]

    def addresses(name: str) -> set[str]:
        return {w["address"] for w in wb.stats(name)["workers"]}

    await asyncio.to_thread(eventually, lambda: victim not in addresses("text") and len(addresses("text")) == 2,
                            60, "the killed worker replaced")
    (restarted,) = addresses("text") - set(pids)
    assert addresses("tabular") == addresses("text")
    for _ in range(4):
        await wb.apredict("text", {"text": SENTENCES[:2]})
    assert any(w["ran"] for w in wb.stats("text")["workers"] if w["address"] == restarted)


# -- deployments change under traffic ---------------------------------------------------
async def test_variant_swap_under_concurrent_traffic_loses_no_request(
    wb: Workbench, tabular_pipeline: Pipeline
) -> None:
    wb.deploy("tabular", name="swapped")
    reference = {v: tabular_pipeline.with_variant(v).predict({"features": ROWS}).outputs for v in ("gbt", "logreg")}
    answered: list[tuple[int, np.ndarray]] = []
    swapped = asyncio.Event()

    async def client(first: int) -> None:
        row, after_swap = first, 0
        # NOTE: keep sending until a while after the swap, so that requests straddle it.
        while after_swap < 20:
            result = await wb.apredict("swapped", {"features": ROWS[row:row + 1]})
            answered.append((row, result["probabilities"]))
            row = (row + 1) % len(ROWS)
            after_swap += swapped.is_set()

    clients = [asyncio.ensure_future(client(k * 10)) for k in range(4)]
    try:
        await asyncio.sleep(0.3)
        event = await asyncio.to_thread(wb.swap, "swapped", "logreg")
        swapped.set()
        await asyncio.wait_for(asyncio.gather(*clients), 120)
    finally:
        for task in clients:
            task.cancel()
        await asyncio.to_thread(wb.undeploy, "swapped")
    assert event["before"] == {"model": "gbt"} and event["after"] == {"model": "logreg"}
    variants = []
    for row, probabilities in answered:
        matches = [v for v, ref in reference.items()
                   if np.allclose(probabilities, ref["probabilities"][row:row + 1], atol=1e-6)]
        assert matches, f"row {row}: an answer from neither variant"
        variants.append(matches[0])
    assert variants[-1] == "logreg"
    assert "gbt" in variants


def test_undeploy_drops_the_deployment_everywhere(wb: Workbench) -> None:
    wb.deploy("tabular", name="scratch")
    assert wb.predict("scratch", {"features": ROWS[:1]})["label"].shape == (1,)
    wb.undeploy("scratch")
    assert "scratch" not in wb.deployments()
    with pytest.raises(NotDeployed, match="scratch"):
        wb.predict("scratch", {"features": ROWS[:1]})

    def holders(dask_worker: Any) -> bool:
        return plugin_name("scratch", 1) in dask_worker.plugins

    async def check() -> tuple[dict[str, bool], dict[str, Any]]:
        from distributed import Client

        async with Client(wb.describe()["scheduler"], asynchronous=True) as client:
            return await client.run(holders), await client.get_metadata("workbench-deployments")

    held, published = asyncio.run(check())
    assert held and not any(held.values())
    assert "scratch" not in published and {"tabular", "text"} <= set(published)


# -- errors -----------------------------------------------------------------------------
def test_bad_input_is_a_clear_error_naming_the_tensor(wb: Workbench) -> None:
    with pytest.raises(InvalidInput, match=r"tensor 'features': shape \[2, 29\]") as error:
        wb.predict("tabular", {"features": np.zeros((2, 29), dtype=np.float32)})
    assert error.value.tensor == "features" and error.value.status_code == 400
    with pytest.raises(InvalidInput, match="unknown input tensor 'texts'") as error:
        wb.predict("text", {"texts": ["hello"]})
    assert error.value.tensor == "texts"
    with pytest.raises(InvalidInput, match="tensor 'text': item 1 is int") as error:
        wb.predict("text", {"text": ["fine", 3]})
    assert error.value.tensor == "text"
    assert wb.predict("text", {"text": ["still serving"]})["topic"].shape == (1,)


async def test_a_stage_failure_on_a_worker_is_a_stage_error_for_that_request_only(wb: Workbench) -> None:
    # NOTE: numpy's own inv fails on a singular matrix: a stage that fails on some data, importable by any worker.
    invert = Pipeline("invert", {"m": "float32[-1,2,2]"},
                      [FunctionStage("numpy.linalg:inv", inputs=["m"], outputs={"inverse": "float32[-1,2,2]"},
                                     name="inv")])
    wb.deploy(invert, batching={"mode": "realtime"}, placement="fused")
    try:
        good = np.eye(2, dtype=np.float32)[None] * 2
        singular = np.zeros((1, 2, 2), dtype=np.float32)
        results = await asyncio.gather(
            *(wb.apredict("invert", {"m": singular if i == 5 else good}) for i in range(12)),
            wb.apredict("tabular", {"features": ROWS[:3]}),
            return_exceptions=True,
        )
        failed = results.pop(5)
        assert isinstance(failed, StageFailed), failed
        assert failed.stage == "inv" and failed.status_code == 500
        assert "stage 'inv' failed: LinAlgError" in str(failed)
        for result in results:
            assert not isinstance(result, BaseException), result
        np.testing.assert_allclose(results[0]["inverse"], good / 4)
        assert wb.stats("invert")["errors_total"] == 1
    finally:
        wb.undeploy("invert")


def test_unknown_placement_is_refused(wb: Workbench) -> None:
    with pytest.raises(WorkbenchError, match="placement must be one of 'auto', 'inprocess', 'fused', 'by-resource'"):
        wb.deploy("tabular", name="nowhere", placement="everywhere")
    assert "nowhere" not in wb.deployments()


def test_local_workers_yield_the_cores_to_the_serving_process(wb: Workbench) -> None:
    # NOTE: Linux keeps a niceness per thread; the worker's own threads (its lanes among them) start from its loop's.
    niceness = wb.engine.backend.client.run(os.nice, 0)  # type: ignore[attr-defined]
    assert len(niceness) == 2 and set(niceness.values()) == {os.nice(0) + 5}


def test_dashboard_link_is_served(wb: Workbench) -> None:
    link = wb.dashboard_link
    assert link is not None and urlparse(link).scheme == "http"
    assert wb.deploy("tabular", name="linked")["dashboard_link"] == link
    wb.undeploy("linked")
    with urllib.request.urlopen(link, timeout=30) as response:
        assert response.status == 200
