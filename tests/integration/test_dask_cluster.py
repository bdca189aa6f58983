"""A cluster started apart from the workbench, as an operator starts one: ``dask scheduler`` and ``dask worker``.

The scheduler and the workers are separate processes (started from a folder
outside the repository, as on another machine that has the package installed).
One worker says it has a GPU (``--resources GPU=1``) and the other is kept away
from any GPU (``CUDA_VISIBLE_DEVICES=""``). Workers run without a nanny, so
that killing a worker's process kills the worker itself. Every process is
stopped when the module ends, whatever happened in its tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from processes import stop_all
from waiting import eventually

from workbench.api import Workbench
from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import load_tabular_data
from workbench.errors import BackendUnavailable, WorkbenchError
from workbench.models import usable_providers
from workbench.pipeline import Pipeline
from workbench.pipeline.custom import FunctionStage
from workbench.pipeline.graph import Prediction

ROWS = load_tabular_data().x_test[:40]
SENTENCES = topic_sentences("test")[0][:12]
HAS_GPU = "CUDAExecutionProvider" in usable_providers()


def shout(text: np.ndarray) -> np.ndarray:
    """Importable here (the test module), but not by the workers: they never see this folder."""
    return np.array([t.upper() for t in text], dtype=object)


@dataclass
class Cluster:
    """The processes of a cluster started from the command line, and where their logs go."""

    folder: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    address: str = ""

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.folder / f"{name}.log", "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log, stderr=subprocess.STDOUT,
                                       cwd=self.folder, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                             "WORKBENCH_INTRA_OP_THREADS": "1", **(env or {})})
        self.processes[name] = process
        return process

    def start_worker(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.start(name, "worker", "--scheduler-file", str(self.folder / "scheduler.json"), "--name", name,
                          "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", *args, env=env)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        stop_all(self.processes.values())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, demo_home: object) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("dask-cluster"))
    scheduler_file = running.folder / "scheduler.json"
    try:
        scheduler = running.start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file))
        # NOTE: the file is written once the scheduler listens; its address (a free port) is in it.
        eventually(lambda: scheduler_file.exists() or scheduler.poll() is not None, what="the scheduler file")
        assert scheduler.poll() is None, running.log("scheduler")
        eventually(lambda: "address" in json.loads(scheduler_file.read_text() or "{}"), what="the scheduler address")
        running.address = json.loads(scheduler_file.read_text())["address"]
        running.start_worker("cpu", env={"CUDA_VISIBLE_DEVICES": ""})
        running.start_worker("gpu", "--resources", "GPU=1")
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def wb(cluster: Cluster) -> Iterator[Workbench]:
    with Workbench.connect(cluster.address) as workbench:
        try:
            eventually(lambda: len(workbench.describe()["workers"]) == 2, what="two workers")
        except AssertionError:
            raise AssertionError(f"workers did not join:\n{cluster.log('cpu')}\n{cluster.log('gpu')}") from None
        workbench.deploy("text", name="text-split", placement="by-resource")
        # NOTE: on the workers, whatever auto would choose: this module tests where batches go among them.
        workbench.deploy("text", placement="fused")
        workbench.deploy("tabular", placement="fused")
        eventually(lambda: all(len(workbench.stats(n)["workers"]) == 2 and all(
            w["providers"] for w in workbench.stats(n)["workers"]) for n in ("text-split", "text", "tabular")),
                   what="both workers holding every deployment")
        yield workbench


def by_kind(wb: Workbench, name: str) -> dict[str, dict[str, Any]]:
    """The deployment's workers as ``{"gpu": ..., "cpu": ...}`` (by their GPU resource)."""
    return {"gpu" if w["resources"].get("GPU") else "cpu": w for w in wb.stats(name)["workers"]}


def test_workers_are_the_ones_started_apart(wb: Workbench, cluster: Cluster) -> None:
    info = wb.describe()
    assert info["scheduler"] == cluster.address
    assert sorted(w["name"] for w in info["workers"].values()) == ["cpu", "gpu"]
    assert str(info["dashboard_link"]).startswith("http://")
    workers = by_kind(wb, "text")
    assert workers["gpu"]["resources"] == {"GPU": 1.0}
    assert workers["cpu"]["resources"] == {}
    assert workers["cpu"]["providers"]["encoder"] == "CPUExecutionProvider"


def test_by_resource_runs_the_encoder_on_the_gpu_worker_and_the_rest_on_the_other(
    wb: Workbench, text_pipeline: Pipeline
) -> None:
    for _ in range(4):
        prediction = wb.predict("text-split", {"text": SENTENCES})
    reference = text_pipeline.predict({"text": SENTENCES})
    assert (prediction["topic"] == reference["topic"]).all()
    np.testing.assert_allclose(prediction["confidence"], reference["confidence"], atol=1e-5)
    workers = by_kind(wb, "text-split")
    assert set(workers["gpu"]["ran"]) == {"encoder"}
    assert set(workers["cpu"]["ran"]) == {"tokenize", "head+label"}
    assert workers["cpu"]["ran"]["tokenize"] == workers["gpu"]["ran"]["encoder"] >= 4
    assert set(prediction.timings_ms) >= {"tokenize", "encoder", "head", "label", "transfer", "total"}


def test_fused_pipelines_go_where_their_resource_is(wb: Workbench) -> None:
    def batches(name: str) -> dict[str, int]:
        return {kind: worker["ran"].get("pipeline", 0) for kind, worker in by_kind(wb, name).items()}

    before = {name: batches(name) for name in ("text", "tabular")}
    for _ in range(4):
        wb.predict("text", {"text": SENTENCES[:2]})
        wb.predict("tabular", {"features": ROWS[:2]})
    # NOTE: text has a GPU stage: the whole pipeline goes to the GPU worker; tabular leaves that worker free.
    assert batches("text") == {"gpu": before["text"]["gpu"] + 4, "cpu": before["text"]["cpu"]}
    assert batches("tabular") == {"cpu": before["tabular"]["cpu"] + 4, "gpu": before["tabular"]["gpu"]}


def test_a_second_workbench_on_the_same_cluster_serves_the_deployments(wb: Workbench, cluster: Cluster) -> None:
    expected = wb.predict("text-split", {"text": SENTENCES}).outputs
    with Workbench.connect(cluster.address) as other:
        assert sorted(other.deployments()) == sorted(wb.deployments())
        assert other.describe()["deployments"]["text-split"]["placement"] == "by-resource"
        got = other.predict("text-split", {"text": SENTENCES}).outputs
        assert (got["topic"] == expected["topic"]).all()
        np.testing.assert_allclose(got["confidence"], expected["confidence"], atol=1e-6)
        workers = other.stats("text-split")["workers"]
        assert len(workers) == 2 and all(w["providers"] for w in workers)
    # NOTE: closing the other workbench leaves the cluster and its deployments alone.
    assert wb.predict("tabular", {"features": ROWS[:3]})["label"].shape == (3,)


def test_a_deploy_the_workers_cannot_build_is_refused_and_leaves_nothing(wb: Workbench, cluster: Cluster) -> None:
    loud = Pipeline("loud", {"text": "str[-1]"},
                    [FunctionStage(shout, inputs=["text"], outputs={"loud": "str[-1]"})])
    assert loud.predict({"text": ["here it works"]})["loud"].tolist() == ["HERE IT WORKS"]
    with pytest.raises(WorkbenchError, match="cannot import function 'test_dask_cluster:shout'"):
        wb.deploy(loud)
    assert "loud" not in wb.deployments()

    def plugins(dask_scheduler: Any) -> list[str]:
        return sorted(dask_scheduler.worker_plugins)

    async def registered() -> list[str]:
        from distributed import Client

        async with Client(cluster.address, asynchronous=True) as client:
            return list(await client.run_on_scheduler(plugins))

    names = asyncio.run(registered())
    assert not [n for n in names if n.startswith("workbench/loud/")], names
    assert "workbench/text/1" in names


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a usable CUDA GPU")
def test_the_gpu_worker_runs_the_encoder_on_cuda(wb: Workbench) -> None:
    workers = by_kind(wb, "text-split")
    assert workers["gpu"]["providers"]["encoder"] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    assert workers["cpu"]["providers"]["encoder"] == "CPUExecutionProvider"
    wb.predict("text-split", {"text": SENTENCES})
    assert "encoder" in by_kind(wb, "text-split")["gpu"]["ran"]


async def _stream(wb: Workbench, during: Callable[[], None], requests: int = 160) -> list[object]:
    """Concurrent requests to ``text`` and ``tabular``; ``during()`` runs once a quarter of them are sent.

    Each answer is a prediction or an error; one that does not come within a minute is a ``TimeoutError``.
    """

    async def one(i: int) -> object:
        name, inputs = ("text", {"text": SENTENCES[i % 12:i % 12 + 1]}) if i % 2 else (
            "tabular", {"features": ROWS[i % 40:i % 40 + 1]})
        try:
            return await asyncio.wait_for(wb.apredict(name, inputs), 60)
        except (WorkbenchError, TimeoutError) as exc:
            return exc

    tasks = []
    for i in range(requests):
        tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.sleep(0.003)
        if i == requests // 4:
            await asyncio.to_thread(during)
    return list(await asyncio.gather(*tasks))


def _check_answers(answers: list[object]) -> None:
    hanging = [a for a in answers if isinstance(a, TimeoutError)]
    assert not hanging, f"{len(hanging)} requests got no answer"
    unexplained = [a for a in answers if not isinstance(a, (Prediction, BackendUnavailable))]
    assert not unexplained, unexplained[:3]


async def test_a_worker_killed_while_idle_costs_no_request(wb: Workbench, cluster: Cluster) -> None:
    known = {w["address"] for w in wb.stats("tabular")["workers"]}
    cluster.start_worker("spare", env={"CUDA_VISIBLE_DEVICES": ""})
    await asyncio.to_thread(eventually, lambda: all(len(wb.stats(n)["workers"]) == 3 for n in ("text", "tabular")),
                            60, "the spare worker holding the deployments")
    (spare,) = {w["address"] for w in wb.stats("tabular")["workers"]} - known
    # NOTE: CPU work is shared between the two CPU workers, so the spare one takes tabular batches.
    for _ in range(6):
        await wb.apredict("tabular", {"features": ROWS[:2]})
    assert any(w["ran"] for w in wb.stats("tabular")["workers"] if w["address"] == spare)
    cluster.kill("spare")
    # NOTE: Dask retries a refused connection for 30 s; a request must not wait for that.
    for i in range(8):
        await asyncio.wait_for(wb.apredict("tabular", {"features": ROWS[i:i + 1]}), 15)
    assert spare not in {w["address"] for w in wb.stats("tabular")["workers"]}


async def test_a_worker_killed_with_batches_in_flight_loses_no_request(wb: Workbench, cluster: Cluster) -> None:
    answers = await asyncio.wait_for(_stream(wb, lambda: cluster.kill("gpu")), 240)
    _check_answers(answers)
    answered = [a for a in answers if isinstance(a, Prediction)]
    print(f"\nkilled the GPU worker mid-stream: {len(answered)} of {len(answers)} answered, "
          f"{wb.stats('text')['redispatched']} text batches sent again")
    assert len(answered) == len(answers)  # NOTE: the CPU worker is left, so every request can be answered
    assert wb.stats("text")["redispatched"] >= 1
    # NOTE: afterwards everything runs on the worker that is left.
    (left,) = wb.stats("text")["workers"]
    assert left["resources"] == {}
    assert wb.predict("text-split", {"text": SENTENCES[:2]})["topic"].shape == (2,)
    assert wb.predict("text", {"text": SENTENCES[:2]})["topic"].shape == (2,)
    assert wb.predict("tabular", {"features": ROWS[:2]})["label"].shape == (2,)
