"""Embedded or remote: the placement policy's decisions and the runner that follows them (fake runners)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from waiting import ManualClock

from workbench.backend.placement import (
    EMBEDDED,
    REMOTE,
    CostMeter,
    PlacedRunner,
    PlacementPolicy,
    PlacementRules,
    check_placement,
)
from workbench.errors import WorkbenchError
from workbench.pipeline.graph import Prediction

BATCH = {"x": np.zeros((1, 2), np.float32)}


class Fake:
    """A runner whose batches cost ``compute_ms`` in a stage (and ``trip_ms`` of transfer when remote)."""

    def __init__(self, compute_ms: float, trip_ms: float | None = None) -> None:
        self.compute_ms, self.trip_ms, self.calls = compute_ms, trip_ms, 0
        self.variants = {"model": "a"}

    async def __call__(self, tensors: dict[str, np.ndarray]) -> Prediction:
        self.calls += 1
        timings = {"model": self.compute_ms}
        if self.trip_ms is not None:
            timings.update(transfer=self.trip_ms, worker_queue=5.0)
        return Prediction({"y": tensors["x"]}, timings)


def placed(placement: str, remote: Fake, local: Fake, clock: ManualClock, **rules: float) -> PlacedRunner:
    loads = []

    async def load() -> Fake:
        loads.append(1)
        return local

    runner = PlacedRunner("p", placement, remote, load, rules=PlacementRules(**rules), clock=clock)  # type: ignore[arg-type]
    runner.loads = loads  # type: ignore[attr-defined]
    return runner


def test_the_first_choice_compares_a_batch_with_its_trip() -> None:
    policy = PlacementPolicy()
    light = policy.initial(compute_ms=0.3, trip_ms=1.5)
    assert light.where == EMBEDDED and "0.30 ms, less than its trip to a worker (1.50 ms)" in light.reason
    heavy = policy.initial(compute_ms=12.0, trip_ms=1.5)
    assert heavy.where == REMOTE and "more than its trip" in heavy.reason


def test_a_move_needs_the_far_edge_of_the_band_at_several_reviews_in_a_row() -> None:
    policy = PlacementPolicy(PlacementRules(confirm=3))
    # NOTE: inside the band (0.5x to 2x the trip) nothing moves, whichever side it is on.
    for ratio in (0.6, 0.9, 1.5, 1.9):
        assert policy.review(EMBEDDED, ratio, 1.0) is None
        assert policy.review(REMOTE, ratio, 1.0) is None
    assert policy.review(EMBEDDED, 3.0, 1.0) is None
    assert policy.review(EMBEDDED, 3.0, 1.0) is None
    assert policy.review(EMBEDDED, 1.0, 1.0) is None  # NOTE: one review back in the band starts the count afresh
    assert policy.review(EMBEDDED, 3.0, 1.0) is None
    assert policy.review(EMBEDDED, 3.0, 1.0) is None
    moved = policy.review(EMBEDDED, 3.0, 1.0)
    assert moved is not None and moved.where == REMOTE and "over 2x" in moved.reason
    for _ in range(2):
        assert policy.review(REMOTE, 0.2, 1.0) is None
    back = policy.review(REMOTE, 0.2, 1.0)
    assert back is not None and back.where == EMBEDDED and "under 0.5x" in back.reason
    assert policy.review(REMOTE, None, 1.0) is None and policy.review(REMOTE, 0.1, None) is None


def test_rules_and_placements_are_checked() -> None:
    with pytest.raises(ValueError, match="0 < embed_below < 1 < remote_above"):
        PlacementRules(embed_below=1.5)
    with pytest.raises(ValueError, match="confirm must be an integer >= 1"):
        PlacementRules(confirm=0)
    with pytest.raises(WorkbenchError, match="placement must be one of 'auto', 'inprocess', 'fused', 'by-resource'"):
        check_placement("everywhere")


def test_the_meter_keeps_compute_and_the_trip_apart() -> None:
    meter = CostMeter()
    meter.add({"a": 1.0, "b": 2.0, "transfer": 4.0, "worker_queue": 9.0}, remote=True)
    meter.add({"a": 1.0, "b": 1.0}, remote=False)
    assert meter.medians() == (2.5, 4.0)


async def test_auto_probes_on_a_worker_and_runs_a_light_pipeline_here() -> None:
    clock = ManualClock()
    remote, local = Fake(0.2, trip_ms=2.0), Fake(0.2)
    runner = await placed("auto", remote, local, clock).start(BATCH)
    assert runner.where == EMBEDDED and runner.moves == 0 and runner.loads == [1]  # type: ignore[attr-defined]
    assert remote.calls == 1 + runner.rules.probe_batches
    assert runner.snapshot()["trip_ms"] == 2.0
    for _ in range(10):
        await runner(BATCH)
    assert local.calls == 10
    # NOTE: while embedded, one batch every probe_interval_s still goes to a worker.
    clock.now += runner.rules.probe_interval_s
    await runner(BATCH)
    assert local.calls == 10 and remote.calls == 2 + runner.rules.probe_batches


async def test_auto_keeps_a_heavy_pipeline_on_the_workers_and_loads_nothing_here() -> None:
    runner = await placed("auto", Fake(12.0, trip_ms=2.0), Fake(12.0), ManualClock()).start(BATCH)
    assert runner.where == REMOTE and runner.loads == []  # type: ignore[attr-defined]
    assert "more than its trip" in runner.decision.reason


async def test_auto_moves_back_to_the_workers_once_batches_grow_costly() -> None:
    clock = ManualClock()
    remote, local = Fake(0.2, trip_ms=2.0), Fake(0.2)
    runner = await placed("auto", remote, local, clock, probe_interval_s=1000).start(BATCH)
    heard = []
    runner.on_decision = heard.append
    local.compute_ms = 9.0  # NOTE: a bigger variant, say: now 4.5x the trip
    for _ in range(200):
        clock.now += 0.25
        await runner(BATCH)
        if runner.where == REMOTE:
            break
    assert runner.where == REMOTE and runner.moves == 1
    assert [d.where for d in heard] == [REMOTE] and "over 2x their trip" in heard[0].reason


async def test_auto_moves_here_only_once_the_pipeline_is_loaded() -> None:
    clock = ManualClock()
    remote, local = Fake(6.0, trip_ms=2.0), Fake(0.2)
    runner = await placed("auto", remote, local, clock, confirm=1, min_batches=1).start(BATCH)
    assert runner.where == REMOTE
    remote.compute_ms = 0.2
    for _ in range(40):
        clock.now += 1.0
        await runner(BATCH)
    await asyncio.sleep(0)  # NOTE: the load runs as a task of its own
    await asyncio.sleep(0)
    assert runner.where == EMBEDDED and runner.loads == [1]  # type: ignore[attr-defined]
    await runner(BATCH)
    assert local.calls >= 1


async def test_fixed_placements_never_move() -> None:
    clock = ManualClock()
    remote, local = Fake(0.1, trip_ms=5.0), Fake(50.0)
    fused = await placed("fused", remote, local, clock, confirm=1, min_batches=1).start(BATCH)
    here = await placed("inprocess", Fake(0.1, trip_ms=5.0), local, clock, confirm=1, min_batches=1).start(BATCH)
    for _ in range(20):
        clock.now += 10
        await fused(BATCH)
        await here(BATCH)
    assert (fused.where, here.where) == (REMOTE, EMBEDDED) and fused.moves == here.moves == 0
    assert remote.calls == 20 and local.calls == 20
