"""Execution lanes on Dask workers: a deployment's batches run on threads of its own there.

One worker of one thread holds a stalled pipeline and the tabular demo: with lanes, tabular is answered while the
stalled batch still holds its lane; the stalled pipeline's ``instances`` lanes run that many of its batches at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from workbench.api import Workbench
from workbench.demo.tabular import load_tabular_data
from workbench.pipeline import Pipeline
from workbench.pipeline.custom import FunctionStage

ROWS = load_tabular_data().x_test[:4]


def stalled(name: str, instances: int | None = None) -> Pipeline:
    return Pipeline(name, {"gate": "str[-1]"},
                    [FunctionStage("stalls:hold", inputs=["gate"], outputs={"done": "float32[-1]"}, name="hold")],
                    instances=instances)


@pytest.fixture(scope="module")
def wb(demo_home: object) -> Iterator[Workbench]:
    with Workbench.local(workers=1, threads_per_worker=1) as workbench:
        workbench.deploy("tabular", placement="fused")
        yield workbench


async def until(check: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    """Wait for ``check`` without blocking this loop (the requests awaited here run on it)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s:g} s")
        await asyncio.sleep(0.02)


def gate(folder: Path, name: str) -> Path:
    path = folder / f"{name}.gate"
    path.write_text("closed")
    return path


async def test_a_light_pipeline_is_answered_while_another_holds_its_lane(wb: Workbench, tmp_path: Path) -> None:
    # NOTE: on the worker, whatever auto would choose: lanes are the worker's.
    wb.deploy(stalled("stalled"), batching={"mode": "realtime"}, placement="fused")
    try:
        path = gate(tmp_path, "one")
        held = asyncio.ensure_future(wb.apredict("stalled", {"gate": [str(path)]}))
        started = path.with_suffix(".started")
        await until(started.exists, "the stalled batch running on the worker")
        assert started.read_text().startswith("lane-stalled")
        answer = await asyncio.wait_for(wb.apredict("tabular", {"features": ROWS}), 30)
        assert answer["label"].shape == (4,)
        assert not held.done(), "the stalled batch was let go before tabular was answered"
        # NOTE: the wire and the wait at the worker are two parts of the breakdown.
        assert {"worker_queue", "transfer"} <= set(answer.timings_ms)
        path.unlink()
        done = await asyncio.wait_for(held, 30)
        np.testing.assert_array_equal(done["done"], [1.0])
        assert done.timings_ms["worker_queue"] >= 0
    finally:
        wb.undeploy("stalled")


async def test_instances_run_that_many_batches_of_a_pipeline_at_once(wb: Workbench, tmp_path: Path) -> None:
    wb.deploy(stalled("pair", instances=2), batching={"mode": "realtime"}, placement="fused")
    try:
        assert [w["nthreads"] for w in wb.stats("pair")["workers"]] == [2]
        paths = [gate(tmp_path, f"pair-{i}") for i in range(3)]
        calls = [asyncio.ensure_future(wb.apredict("pair", {"gate": [str(p)]})) for p in paths]
        # NOTE: two lanes: two batches hold them, the third waits at the worker (or in the batcher) for one.
        await until(lambda: sum(p.with_suffix(".started").exists() for p in paths) == 2,
                    "two batches of the pipeline running at once")
        await asyncio.sleep(0.5)
        assert sum(p.with_suffix(".started").exists() for p in paths) == 2
        names = {p.with_suffix(".started").read_text() for p in paths if p.with_suffix(".started").exists()}
        assert len(names) == 2 and all(n.startswith("lane-pair") for n in names)
        for path in paths:
            path.unlink()
        results = await asyncio.wait_for(asyncio.gather(*calls), 30)
        assert [r["done"].tolist() for r in results] == [[1.0]] * 3
    finally:
        wb.undeploy("pair")


def test_instances_round_trip_through_the_pipeline_file() -> None:
    pipeline = stalled("pair", instances=3)
    assert pipeline.to_dict()["instances"] == 3
    assert Pipeline.from_dict(pipeline.to_dict(), load=False).instances == 3
    assert "instances" not in stalled("one").to_dict()
    with pytest.raises(ValueError, match="instances must be an integer >= 1"):
        stalled("none", instances=0)
