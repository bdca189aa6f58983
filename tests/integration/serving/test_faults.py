"""Faults over real HTTP: deadlines, variant swaps under load, a corrupt variant, a killed worker,
readiness, and a graceful shutdown.

Most tests share one server over a LocalCluster of two worker processes, serving
the text and tabular pipelines from a temporary copy of the workbench home (so
that a corrupt variant can be added to its repository without touching the
shared one). Readiness uses a scheduler and a worker started as separate
processes, and the shutdown test a ``workbench serve`` process of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from loopback import Answer, client, live_server, post, tabular_request, text_request
from processes import DaskProcesses, start_serving
from servers import Served, serving
from waiting import eventually

from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import load_tabular_data
from workbench.pipeline import Pipeline
from workbench.serving.app import ServeConfig
from workbench.serving.server import engine_factory

#: Rows with no missing values (JSON has no NaN): the last training rows.
ROWS = load_tabular_data().x_train[-32:]
SENTENCES = topic_sentences("test")[0][:64]
#: Sentences per text request: one full batch (``max_batch_size``), so batches never merge requests.
BATCH = 8
#: Requests queued ahead of the late ones in the deadline test.
BACKLOG = 60


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> Path:
    """A copy of the workbench home with two broken variants of the tabular model.

    ``garbage``: a model file that is not ONNX at all (refused where the swap is asked for);
    ``unloadable``: valid ONNX with an operator no runtime has (refused by the workers).
    """
    copy = tmp_path_factory.mktemp("faults") / "home"

    def link_or_copy(source: str, target: str) -> None:
        # NOTE: hard links cost nothing and are safe here: this module only adds files, it never writes one in place.
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    shutil.copytree(demo_home, copy, copy_function=link_or_copy)
    models = copy / "models" / "tabular"
    metadata = (models / "gbt" / "metadata.yaml").read_text()
    for variant in ("garbage", "unloadable"):
        (models / variant).mkdir()
        (models / variant / "metadata.yaml").write_text(metadata)
    (models / "garbage" / "model.onnx").write_bytes(b"\x08\x07not an onnx model" * 64)
    model = onnx.load(str(models / "logreg" / "model.onnx"))
    model.graph.node[0].op_type = "NoSuchOperator"
    onnx.save(model, str(models / "unloadable" / "model.onnx"))
    return copy


@pytest.fixture(scope="module")
def served(home: Path) -> Iterator[Served]:
    """The text and tabular pipelines of ``home``, batches on a LocalCluster of two workers."""
    pipelines = [str(home / "pipelines" / f"{name}.yaml") for name in ("text", "tabular")]
    # NOTE: no latency budget: these tests queue far more than a second of work on purpose.
    config = ServeConfig(batching={"max_batch_size": BATCH, "max_delay_ms": 5, "target_p99_ms": None})
    with serving(config, inprocess=False, workers=2, pipelines=pipelines) as live:
        eventually(lambda: len(_held(live, "text")) == 2 and len(_held(live, "tabular")) == 2,
                   what="both workers holding both pipelines")
        yield live


def _held(live: Served, name: str) -> list[dict[str, Any]]:
    async def workers() -> list[dict[str, Any]]:
        deployment = live.engine.deployment(name)
        return live.engine.backend.workers(name, deployment.generation)

    return live.call(workers)


async def _stats(http: httpx.AsyncClient, url: str, name: str) -> dict[str, Any]:
    response = await http.get(f"{url}/api/pipelines/{name}/stats")
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0, what: str = "the condition") -> None:
    """Await ``check()`` (a coroutine function returning a bool) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s:g} s")
        await asyncio.sleep(0.05)


def _text(i: int, rows: int = BATCH) -> dict[str, Any]:
    return text_request([SENTENCES[(i + k) % len(SENTENCES)] for k in range(rows)])


# -- (a) deadlines ----------------------------------------------------------------------
async def test_a_request_whose_deadline_passes_in_the_queue_gets_504_and_is_not_run(served: Served) -> None:
    url = f"{served.url}/v2/models/text/infer"
    late = text_request(["late"] * 3)  # NOTE: 3 rows: never merged with the 8-row requests ahead of it
    async with client(connections=64) as http:
        before = await _stats(http, served.url, "text")
        # NOTE: the backlog carries its own long deadline: some of it may reach the server only after the
        # server's default is set to 20 ms below, and a request's own deadline overrides that default.
        patient_ms = {"parameters": {"timeout_ms": 600_000}}
        backlog = [asyncio.ensure_future(post(http, url, {**_text(i), **patient_ms})) for i in range(BACKLOG)]

        async def queued() -> bool:
            return (await _stats(http, served.url, "text"))["queue_depth"] >= 16

        # NOTE: 16 batches of 8 rows queued take far longer than the late requests' 20 ms to drain.
        await _until(queued, what="a queue of 16 batches")
        by_parameter = await post(http, url, {**late, "parameters": {"timeout_ms": 20}})
        by_header = await post(http, url, late, headers={"X-Request-Timeout-Ms": "20"})
        # NOTE: the server's own config object, which it reads for each request.
        config: ServeConfig = served.live.app.state.config
        config.default_timeout_ms = 20
        try:
            by_default = await post(http, url, late)
            # NOTE: a request's own deadline overrides the server's default.
            patient = asyncio.ensure_future(post(http, url, {**_text(99), **patient_ms}))
            await asyncio.sleep(0.2)
        finally:
            config.default_timeout_ms = None
        answers = await asyncio.wait_for(asyncio.gather(*backlog, patient), 240)
        after = await _stats(http, served.url, "text")

    assert [a.status for a in answers] == [200] * (BACKLOG + 1), [a.body for a in answers if a.status != 200][:2]
    for answer in (by_parameter, by_header, by_default):
        assert answer.status == 504, (answer.timings_ms, [a.status for a in (by_parameter, by_header, by_default)])
        assert "deadline passed" in answer.body["error"] and "it was not run" in answer.body["error"]
    # NOTE: each 8-row request is one batch of its own: the backlog and the patient one ran in as many
    # batches, and the three late ones never reached a worker.
    delta = {k: after[k] - before[k] for k in ("requests_total", "batches_total", "expired_total", "errors_total")}
    assert delta == {"requests_total": BACKLOG + 1, "batches_total": BACKLOG + 1, "expired_total": 3,
                     "errors_total": 3}, (delta, after["batch_size"])
    assert after["admission"]["waiting_rows"] == 0


# -- (b) swap under load ----------------------------------------------------------------
async def test_a_swap_under_load_fails_no_request_and_the_version_changes(
    served: Served, tabular_pipeline: Pipeline
) -> None:
    reference = {v: tabular_pipeline.with_variant(v).predict({"features": ROWS})["probabilities"]
                 for v in ("gbt", "logreg")}
    url = f"{served.url}/v2/models/tabular/infer"
    answered: list[tuple[int, Answer]] = []
    swapped = asyncio.Event()

    async def user(http: httpx.AsyncClient, first: int) -> None:
        row, after_swap = first, 0
        # NOTE: keep sending until a while after the swap, so that requests straddle it.
        while after_swap < 15:
            answered.append((row, await post(http, url, tabular_request(ROWS[row:row + 1]))))
            row = (row + 1) % len(ROWS)
            after_swap += swapped.is_set()

    async with client(connections=16) as http:
        users = [asyncio.ensure_future(user(http, k * 4)) for k in range(8)]
        try:
            await asyncio.sleep(0.5)
            response = await http.post(f"{served.url}/api/pipelines/tabular/swap", json={"variant": "logreg"})
            swapped.set()
            await asyncio.wait_for(asyncio.gather(*users), 120)
        finally:
            for task in users:
                task.cancel()
        assert response.status_code == 200, response.text
        assert response.json()["before"] == {"model": "gbt"} and response.json()["after"] == {"model": "logreg"}
        back = await http.post(f"{served.url}/api/pipelines/tabular/swap", json={"variant": "gbt"})
        assert back.status_code == 200, back.text

    failed = [(a.status, a.error or a.body) for _, a in answered if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answered)} requests failed: {failed[:3]}"
    versions = [a.version for _, a in answered]
    print(f"\n{len(answered)} requests across the swap: {Counter(versions)}")
    assert versions[0] == "gbt" and versions[-1] == "logreg"
    for row, answer in answered:
        # NOTE: the version an answer names is the one that computed it.
        assert answer.version in reference
        np.testing.assert_allclose(answer.output("probabilities"), reference[answer.version][row].ravel(), atol=1e-6,
                                   err_msg=f"row {row} answered as version {answer.version}")


async def test_swaps_asked_for_at_once_take_turns_and_every_request_is_answered(served: Served) -> None:
    url = f"{served.url}/v2/models/tabular/infer"
    swap_url = f"{served.url}/api/pipelines/tabular/swap"
    async with client(connections=64) as http:
        load = [asyncio.ensure_future(post(http, url, tabular_request(ROWS[i % 32:i % 32 + 1]))) for i in range(60)]
        swaps = await asyncio.gather(*(http.post(swap_url, json={"variant": v}) for v in ("logreg", "gbt", "logreg")))
        answers = await asyncio.wait_for(asyncio.gather(*load), 120)
        after = await post(http, url, tabular_request(ROWS[:2]))
        (summary,) = [p for p in (await http.get(f"{served.url}/api/pipelines")).json() if p["name"] == "tabular"]
        back = await http.post(swap_url, json={"variant": "gbt"})
    assert [r.status_code for r in swaps] == [200] * 3, [r.text for r in swaps]
    # NOTE: one after the other (in whatever order they arrived), each from the variant the previous one left.
    steps = [(r.json()["before"]["model"], r.json()["after"]["model"]) for r in swaps]
    chains = [order for order in itertools.permutations(steps)
              if order[0][0] == "gbt" and all(a[1] == b[0] for a, b in itertools.pairwise(order))]
    assert chains, f"the swaps overlapped: {steps}"
    assert [a.status for a in answers] == [200] * 60
    assert after.status == 200 and after.version == summary["variants"]["model"] == chains[0][-1][1]
    assert len(_held(served, "tabular")) == 2
    assert back.status_code == 200


# -- (c) a corrupt variant --------------------------------------------------------------
@pytest.mark.parametrize("variant", ["garbage", "unloadable"])
async def test_a_swap_to_a_corrupt_variant_fails_clearly_and_the_previous_one_keeps_serving(
    served: Served, variant: str
) -> None:
    url = f"{served.url}/v2/models/tabular/infer"
    async with client(connections=16) as http:
        (before,) = [p for p in (await http.get(f"{served.url}/api/pipelines")).json() if p["name"] == "tabular"]
        load = [asyncio.ensure_future(post(http, url, tabular_request(ROWS[i % 32:i % 32 + 1]))) for i in range(40)]
        response = await http.post(f"{served.url}/api/pipelines/tabular/swap", json={"variant": variant})
        answers = await asyncio.wait_for(asyncio.gather(*load), 120)
        (after,) = [p for p in (await http.get(f"{served.url}/api/pipelines")).json() if p["name"] == "tabular"]
        again = await post(http, url, tabular_request(ROWS[:3]))
        events = (await _stats(http, served.url, "tabular"))["events"]

    assert response.status_code >= 400, response.text
    error = response.json()["error"]
    print(f"\nswap to {variant!r}: {response.status_code} {error[:300]}")
    assert f"tabular/{variant}/model.onnx" in error and "cannot" in error
    assert [a.status for a in answers] == [200] * 40
    assert after["variants"] == before["variants"] and after["generation"] == before["generation"]
    assert again.status == 200 and again.version == before["variants"]["model"]
    assert len(again.output("label")) == 3
    failed = events[-1]
    assert failed["event"] == "swap_failed" and failed["variant"] == variant and error in failed["error"]

    def plugins(dask_scheduler: Any) -> list[str]:
        return sorted(dask_scheduler.worker_plugins)

    registered = served.call(lambda: served.engine.backend.client.run_on_scheduler(plugins))
    assert [p for p in registered if p.startswith("workbench/tabular/")] == [f"workbench/tabular/{after['generation']}"]


# -- (d) a worker killed under load -----------------------------------------------------
async def test_a_worker_killed_under_load_answers_every_request(served: Served) -> None:
    pids: dict[str, int] = served.call(lambda: served.engine.backend.client.run(os.getpid))
    assert len(pids) == 2
    victim = min(pids)
    urls = {name: f"{served.url}/v2/models/{name}/infer" for name in ("text", "tabular")}

    async def one(http: httpx.AsyncClient, i: int) -> Answer:
        if i % 2:
            return await post(http, urls["text"], _text(i, rows=2))
        return await post(http, urls["tabular"], tabular_request(ROWS[i % 32:i % 32 + 1]))

    async with client(connections=200) as http:
        tasks = []
        for i in range(160):
            tasks.append(asyncio.ensure_future(one(http, i)))
            await asyncio.sleep(0.005)
            if i == 40:
                # NOTE: the worker process itself, not its nanny: the nanny starts a new one.
                os.kill(pids[victim], signal.SIGKILL)
        answers = await asyncio.wait_for(asyncio.gather(*tasks), 240)
        statuses = Counter(a.status for a in answers)
        resent = {n: (await _stats(http, served.url, n))["redispatched"] for n in ("text", "tabular")}
        print(f"\nkilled a worker mid-stream: {dict(statuses)}, batches sent again: {resent}")
        # NOTE: the batches the killed worker held were sent again to the other one, which kept serving.
        failed = [(a.status, a.error or a.body) for a in answers if a.status != 200]
        assert not failed, f"{len(failed)} requests not answered: {failed[:3]}"

        # NOTE: the nanny restarts the worker, which builds both pipelines again: ready, and serving on both.
        def recovered() -> bool:
            text, tabular = ({w["address"] for w in _held(served, n)} for n in ("text", "tabular"))
            return len(text) == 2 and text == tabular and victim not in text

        await asyncio.to_thread(eventually, recovered, 120, "the killed worker replaced, holding both pipelines")
        assert (await http.get(f"{served.url}/v2/health/ready")).status_code == 200
        assert (await post(http, urls["text"], _text(0, rows=2))).status == 200


async def test_a_worker_killed_during_a_swap_completes_it_on_the_rest_or_undoes_it(served: Served) -> None:
    pids: dict[str, int] = served.call(lambda: served.engine.backend.client.run(os.getpid))
    victim = max(pids)
    async with client(connections=64) as http:
        (before,) = [p for p in (await http.get(f"{served.url}/api/pipelines")).json() if p["name"] == "text"]
        target = "int8" if before["variants"]["encoder"] == "fp32" else "fp32"
        url = f"{served.url}/v2/models/text/infer"

        async def stream() -> list[Answer]:
            answers = []
            for i in range(60):
                answers.append(await post(http, url, _text(i, rows=2)))
            return answers

        load = [asyncio.ensure_future(stream()) for _ in range(4)]
        swap = asyncio.ensure_future(http.post(f"{served.url}/api/pipelines/text/swap", json={"variant": target}))
        await asyncio.sleep(0.15)  # NOTE: the new variant is loading on both workers now
        os.kill(pids[victim], signal.SIGKILL)
        response = await asyncio.wait_for(swap, 180)
        answers = [a for stream_ in await asyncio.wait_for(asyncio.gather(*load), 240) for a in stream_]
        (after,) = [p for p in (await http.get(f"{served.url}/api/pipelines")).json() if p["name"] == "text"]
        again = await post(http, url, _text(0, rows=2))

    print(f"\nworker killed during a swap to {target}: {response.status_code} {response.text[:200]}")
    failed = [(a.status, a.error or a.body) for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} requests not answered: {failed[:3]}"
    if response.status_code == 200:
        assert after["variants"]["encoder"] == target and after["generation"] > before["generation"]
    else:
        error = response.json()["error"]
        assert response.status_code >= 500 and error, response.text
        assert after["variants"] == before["variants"] and after["generation"] == before["generation"]
    assert again.status == 200 and again.version == after["variants"]["encoder"]

    def recovered() -> bool:
        return len(_held(served, "text")) == 2 and len(_held(served, "tabular")) == 2

    await asyncio.to_thread(eventually, recovered, 120, "the killed worker replaced, holding both pipelines")


# -- (e) readiness ----------------------------------------------------------------------
def test_ready_is_503_until_every_pipeline_has_a_warm_worker(tmp_path: Path, home: Path) -> None:
    dask = DaskProcesses(tmp_path)
    try:
        address = dask.start_scheduler()
        config = ServeConfig(targets=[home / "pipelines" / "tabular.yaml", home / "pipelines" / "text.yaml"])
        with live_server(engine_factory(address, workers=0), config) as live, httpx.Client(timeout=30) as http:

            def status(path: str = "/v2/health/ready") -> int:
                return http.get(f"{live.url}{path}").status_code

            # NOTE: deployed, but no worker holds them: not ready, though alive.
            assert status() == 503 and status("/v2/models/text/ready") == 503
            assert status("/v2/health/live") == 200
            worker = dask.start_worker("only")
            try:
                eventually(lambda: status() == 200, 120, "ready once the worker holds both pipelines")
            except AssertionError:
                raise AssertionError(f"not ready:\n{dask.log('only')}") from None
            assert status("/v2/models/tabular/ready") == 200 and status("/v2/models/text/ready") == 200
            answer = http.post(f"{live.url}/v2/models/tabular/infer", json=tabular_request(ROWS[:2]))
            assert answer.status_code == 200, answer.text
            worker.kill()
            worker.wait(timeout=30)
            eventually(lambda: status() == 503, 60, "not ready once the only worker is gone")
    finally:
        dask.stop()


# -- (f) graceful shutdown --------------------------------------------------------------
async def test_sigterm_finishes_the_requests_in_flight_and_exits_0(tmp_path: Path, demo_home: Path) -> None:
    # NOTE: no latency budget: the queue must hold seconds of work when the signal comes.
    process, url = start_serving(tmp_path, "text", "--latency-budget-ms", "none")
    count = 48  # NOTE: 384 sentences: seconds of work for two workers, so most are still queued at the signal
    sent = 0

    def one_sent() -> None:
        nonlocal sent
        sent += 1

    try:
        async with client(connections=count) as http:
            requests = [asyncio.ensure_future(post(http, f"{url}/v2/models/text/infer", _text(i), on_sent=one_sent))
                        for i in range(count)]

            async def all_sent() -> bool:
                return sent == count

            await _until(all_sent, what="every request sent")
            await asyncio.sleep(0.2)  # NOTE: for the server to read the last ones off their connections
            in_flight = sum(not r.done() for r in requests)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            answers = await asyncio.wait_for(asyncio.gather(*requests), 120)
        code = await asyncio.to_thread(process.wait, 120)
        took_s = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        if process.stdout is not None:
            process.stdout.close()
    log = (tmp_path / "serve.log").read_text()
    print(f"\nSIGTERM with {in_flight} of {count} requests in flight: exit {code} after {took_s:.1f} s")
    assert in_flight >= count // 4, "the requests were answered before the signal: too few were in flight"
    assert [a.status for a in answers] == [200] * count, [(a.status, a.error or a.body) for a in answers][:3]
    assert code == 0, log[-3000:]
    assert took_s < 90
