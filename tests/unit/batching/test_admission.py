"""Latency-aware admission (the batcher's wait estimate, its floor, its refusals) and deadlines in the queue."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from workbench.batching import DeadlineExceeded, DynamicBatcher, Overloaded
from workbench.config import BatchingConfig
from workbench.engine import Engine
from workbench.pipeline import Pipeline, Prediction
from workbench.pipeline.custom import FunctionStage

#: The fake model's cost: a batch takes this long per row (so its rate is about 100 rows/s whatever the batch size).
ROW_S = 0.01


class PerRow:
    """A run_batch that costs ``ROW_S`` per row, and that a test can hold to let a queue build up."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.open = asyncio.Event()
        self.open.set()

    async def __call__(self, tensors: dict[str, np.ndarray]) -> Prediction:
        await self.open.wait()
        self.rows.append(len(tensors["x"]))
        await asyncio.sleep(ROW_S * len(tensors["x"]))
        return Prediction({"y": tensors["x"] * 2}, {"model": 0.1})


def _request(i: int) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 2), i, dtype=np.float32)}


async def _warm(batcher: DynamicBatcher, rounds: int = 3) -> None:
    for _ in range(rounds):
        await asyncio.gather(*(batcher.submit(_request(i)) for i in range(12)))
    await asyncio.sleep(0.01)  # NOTE: the last batch's task ends just after its requests are answered
    assert batcher.in_flight == 0


async def _burst(batcher: DynamicBatcher, count: int) -> list[asyncio.Future[Prediction]]:
    """Submit ``count`` requests at once; return them once every submit has either queued or been refused."""
    tasks = [asyncio.ensure_future(batcher.submit(_request(i))) for i in range(count)]
    await asyncio.sleep(0)
    return tasks


def _refused(tasks: list[asyncio.Future[Prediction]]) -> list[Overloaded]:
    return [t.exception() for t in tasks if t.done() and isinstance(t.exception(), Overloaded)]  # type: ignore[misc]


async def test_the_estimate_is_the_queue_ahead_at_the_measured_rate_plus_one_batch() -> None:
    run = PerRow()
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=4, max_delay_ms=50))
    assert batcher.estimated_latency_s() is None  # nothing measured yet
    await _warm(batcher)
    idle = batcher.estimated_latency_s()
    assert idle is not None
    # NOTE: with nothing queued the estimate is one batch run: at least its rows' cost, and no hang's worth.
    assert ROW_S <= idle < 2.0
    run.open.clear()
    held = await _burst(batcher, 21)
    await asyncio.sleep(0.01)
    waiting = batcher.snapshot()["admission"]["waiting_rows"]
    assert 16 <= waiting <= 20  # one batch of up to 4 rows was taken (and is held), the rest wait behind it
    queued = batcher.estimated_latency_s()
    assert queued is not None
    # NOTE: at about 100 rows/s, at least ROW_S more per row waiting; a slow machine only lowers the measured rate.
    assert waiting * ROW_S * 0.9 <= queued - idle < 5.0
    batcher.set_batching(max_in_flight=2)
    doubled = batcher.estimated_latency_s()
    assert doubled is not None
    assert doubled - idle == pytest.approx((queued - idle) / 2)  # two slots drain the queue twice as fast
    run.open.set()
    await asyncio.gather(*held)
    assert batcher.snapshot()["admission"]["waiting_rows"] == 0
    await batcher.close()


async def test_requests_the_queue_would_keep_past_the_target_are_refused_at_once() -> None:
    run = PerRow()
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=4, max_delay_ms=50))
    await _warm(batcher)
    batcher.set_latency_target(200)
    run.open.clear()
    tasks = await _burst(batcher, 60)
    refused = _refused(tasks)
    admitted = [t for t in tasks if not t.done()]
    # NOTE: about 14 rows fit in 200 ms at ~100 rows/s behind the held batch (fewer when the machine is slow),
    # never fewer than the floor (two rounds, the held batch one of them); the rest are refused at once.
    assert 4 <= len(admitted) <= 18, len(admitted)
    assert len(refused) == 60 - len(admitted)
    first = refused[0]
    assert first.status_code == 429 and first.retry_after_s > 0
    assert "over its latency target" in str(first) and "against a target of 200 ms" in str(first)
    assert "rows) are queued ahead" in str(first)
    run.open.set()
    results = await asyncio.gather(*admitted)
    assert all(isinstance(r, Prediction) for r in results)
    snapshot = batcher.snapshot()
    assert snapshot["rejected_total"] == len(refused)
    assert snapshot["admission"] == {"latency_target_ms": 200.0, "waiting_rows": 0,
                                     "estimated_latency_ms": snapshot["admission"]["estimated_latency_ms"],
                                     "refused_for_latency": len(refused)}
    assert sum(run.rows) == 36 + len(admitted)  # refused requests never reached the model
    await batcher.close()


async def test_a_cold_start_and_two_rounds_of_batches_are_never_refused() -> None:
    run = PerRow()
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=4, max_delay_ms=50, max_in_flight=2))
    batcher.set_latency_target(0.001)  # unreachable once a batch has been measured
    first = await _burst(batcher, 40)
    assert not _refused(first), "no rate measured yet: a cold start must not be refused"
    await asyncio.gather(*first)
    run.open.clear()
    tasks = await _burst(batcher, 40)
    admitted = [t for t in tasks if not t.done()]
    # NOTE: the floor is two rounds of full batches (2 x 4 rows x 2 slots); the batcher may take a batch meanwhile.
    assert 16 <= len(admitted) <= 20, len(admitted)
    assert len(_refused(tasks)) == 40 - len(admitted)
    run.open.set()
    await asyncio.gather(*admitted)
    await batcher.close()


async def test_without_a_target_only_max_queue_refuses() -> None:
    run = PerRow()
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=4, max_delay_ms=50))
    await _warm(batcher)
    batcher.set_latency_target(50)
    batcher.set_latency_target(None)
    assert batcher.latency_target_ms is None
    run.open.clear()
    tasks = await _burst(batcher, 60)
    assert not _refused(tasks)
    run.open.set()
    await asyncio.gather(*tasks)
    with pytest.raises(ValueError, match="latency target must be a number of milliseconds > 0"):
        batcher.set_latency_target(0)
    await batcher.close()


async def test_the_engine_feeds_its_latency_target_to_the_batcher() -> None:
    negate = Pipeline("negate", {"x": "float32[-1,2]"},
                      [FunctionStage("numpy:negative", inputs=["x"], outputs={"y": "float32[-1,2]"}, name="neg")])
    engine = Engine.inprocess()
    try:
        await engine.deploy(negate, batching={"target_p99_ms": 80})
        batcher = engine.deployment("negate").batcher
        assert batcher.latency_target_ms == 80
        engine.set_latency_target("negate", 250)
        assert batcher.latency_target_ms == 250
        engine.set_batching("negate", target_p99_ms=120)
        assert batcher.latency_target_ms == 120
        engine.set_latency_target("negate", None)
        assert batcher.latency_target_ms is None
        assert engine.stats("negate")["admission"]["latency_target_ms"] is None
    finally:
        await engine.close()


async def test_a_deadline_is_answered_when_it_passes_not_when_the_queue_ahead_is_done() -> None:
    run = PerRow()
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=4, max_delay_ms=0))
    run.open.clear()
    ahead = await _burst(batcher, 8)  # NOTE: held: the queue ahead would take forever
    late = asyncio.ensure_future(batcher.submit(_request(99), timeout_s=0.05))
    done, _ = await asyncio.wait([late], timeout=5)
    assert done, "the deadline passed, yet the caller still waits for the queue ahead"
    with pytest.raises(DeadlineExceeded, match="it was not run"):
        late.result()
    assert batcher.snapshot()["admission"]["waiting_rows"] == 4  # NOTE: the expired one no longer counts
    run.open.set()
    await asyncio.gather(*ahead)
    assert sum(run.rows) == 8  # the expired request never reached the model
    snapshot = batcher.snapshot()
    assert snapshot["expired_total"] == 1 and snapshot["requests_total"] == 8
    await batcher.close()


async def test_a_request_dispatched_before_its_deadline_runs_to_the_end() -> None:
    run = PerRow()
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=4, max_delay_ms=0))
    # NOTE: 4 rows at 10 ms each: the batch runs for 40 ms, past the 10 ms deadline that it was dispatched within.
    results = await asyncio.gather(*(batcher.submit(_request(i), timeout_s=0.01) for i in range(4)))
    assert [r["y"][0, 0] for r in results] == [0, 2, 4, 6]
    assert batcher.snapshot()["expired_total"] == 0
    await batcher.close()


async def test_a_request_whose_caller_gave_up_is_not_run() -> None:
    run = PerRow()
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=4, max_delay_ms=0))
    run.open.clear()
    ahead = await _burst(batcher, 4)  # NOTE: one batch, held
    gone = asyncio.ensure_future(batcher.submit(_request(99)))
    kept = asyncio.ensure_future(batcher.submit(_request(7)))
    await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.sleep(0)
    assert batcher.snapshot()["admission"]["waiting_rows"] == 2  # NOTE: counted until the batcher drops it
    run.open.set()
    assert (await kept)["y"][0, 0] == 14
    await asyncio.gather(*ahead)
    assert sum(run.rows) == 5  # the four ahead and the one kept: the abandoned request never ran
    assert batcher.snapshot()["admission"]["waiting_rows"] == 0
    await batcher.close()


@pytest.mark.parametrize("timeout_s", [1.8e299, float("inf")])
async def test_a_deadline_too_far_to_count_is_no_deadline(timeout_s: float) -> None:
    batcher = DynamicBatcher("p", PerRow(), BatchingConfig(max_batch_size=4, max_delay_ms=0))
    answer = await batcher.submit(_request(1), timeout_s=timeout_s)
    assert answer.outputs["y"].tolist() == [[2.0, 2.0]]
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
            await batcher.submit(_request(1), timeout_s=bad)
    await batcher.close()
