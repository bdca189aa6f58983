"""The dynamic batcher: batch bounds, live knobs, lone requests, errors, padding, stats."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from workbench.backend import InProcessRunner
from workbench.batching import BatcherClosed, DeadlineExceeded, DynamicBatcher, Overloaded, merge, split
from workbench.config import BatchingConfig
from workbench.errors import BackendUnavailable, StageFailed
from workbench.pipeline import Pipeline, Prediction


class Recorder:
    """A run_batch that doubles its input, records batch sizes, and can be told to wait."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s

    async def __call__(self, tensors: dict[str, np.ndarray]) -> Prediction:
        self.sizes.append(len(tensors["x"]))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return Prediction({"y": tensors["x"] * 2}, {"model": 0.1})


def _request(i: int, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 2), i, dtype=np.float32)}


async def test_each_request_gets_its_own_rows_back() -> None:
    run = Recorder(delay_s=0.01)
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=8, max_delay_ms=50))
    results = await asyncio.gather(*(batcher.submit(_request(i, rows=1 + i % 3)) for i in range(30)))
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1 + i % 3, 2), 2 * i))
        assert {"queue", "batch_formation", "model", "total"} <= set(result.timings_ms)
        assert result.timings_ms["total"] >= result.timings_ms["queue"]
    assert max(run.sizes) <= 8
    assert sum(run.sizes) == sum(1 + i % 3 for i in range(30))
    assert len(run.sizes) < 30, "concurrent requests must share batches"
    await batcher.close()


async def test_realtime_mode_sends_one_request_per_batch() -> None:
    run = Recorder(delay_s=0.005)
    batcher = DynamicBatcher("p", run, BatchingConfig(mode="realtime"))
    await asyncio.gather(*(batcher.submit(_request(i)) for i in range(10)))
    assert run.sizes == [1] * 10
    await batcher.close()


async def test_a_lone_request_does_not_wait_for_company() -> None:
    batcher = DynamicBatcher("p", Recorder(), BatchingConfig(max_batch_size=32, max_delay_ms=2000))
    await batcher.submit(_request(0))  # first request: no arrival history yet
    await asyncio.sleep(0.05)
    began = time.perf_counter()
    await batcher.submit(_request(1))
    assert time.perf_counter() - began < 1.0, "dispatched at once, not after max_delay_ms"
    await batcher.close()


async def test_knob_change_applies_to_the_next_batch() -> None:
    run = Recorder(delay_s=0.01)
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=16, max_delay_ms=20))
    await asyncio.gather(*(batcher.submit(_request(i)) for i in range(40)))
    assert max(run.sizes) > 2
    batcher.set_batching(max_batch_size=2)
    run.sizes.clear()
    await asyncio.gather(*(batcher.submit(_request(i)) for i in range(40)))
    assert max(run.sizes) == 2 and sum(run.sizes) == 40
    assert batcher.snapshot()["config"]["max_batch_size"] == 2
    await batcher.close()


def test_bad_knob_values_are_refused_with_the_range() -> None:
    batcher = DynamicBatcher("p", Recorder())
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1"):
        batcher.set_batching(max_batch_size=0)
    with pytest.raises(ValueError, match="max_delay_ms must be between 0 and 10000"):
        batcher.set_batching(max_delay_ms=-1)
    with pytest.raises(ValueError, match="mode must be one of"):
        batcher.set_batching(mode="eventually")
    assert batcher.config == BatchingConfig()


async def test_a_request_that_breaks_its_batch_fails_alone() -> None:
    sizes: list[int] = []

    async def poisoned(tensors: dict[str, np.ndarray]) -> Prediction:
        sizes.append(len(tensors["x"]))
        await asyncio.sleep(0.005)
        if (tensors["x"] == 3).any():
            raise StageFailed("stage 'model' failed: row 3 is poison", "model")
        return Prediction({"y": tensors["x"] * 2}, {"model": 0.1})

    batcher = DynamicBatcher("p", poisoned, BatchingConfig(max_batch_size=4, max_delay_ms=20))
    results = await asyncio.gather(*(batcher.submit(_request(i)) for i in range(12)), return_exceptions=True)
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [3]
    assert isinstance(results[3], StageFailed) and results[3].stage == "model"
    assert all(r["y"][0, 0] == 2 * i for i, r in enumerate(results) if i != 3)  # type: ignore[index]
    assert max(sizes) > 1  # batches did form; the one holding the poison was re-run request by request
    snapshot = batcher.snapshot()
    assert snapshot["errors_total"] == 1 and snapshot["isolated_batches"] >= 1
    await batcher.close()


async def test_a_backend_outage_fails_the_batch_without_retrying_each_request() -> None:
    run = Recorder(delay_s=0.01)

    async def unavailable(tensors: dict[str, np.ndarray]) -> Prediction:
        await run(tensors)
        raise BackendUnavailable("no worker could run the batch")

    batcher = DynamicBatcher("p", unavailable, BatchingConfig(max_batch_size=4, max_delay_ms=20))
    results = await asyncio.gather(*(batcher.submit(_request(i)) for i in range(8)), return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    assert sum(run.sizes) == 8  # each request was sent once, never again alone
    assert batcher.snapshot()["isolated_batches"] == 0
    await batcher.close()


async def test_max_in_flight_bounds_concurrent_batches() -> None:
    active = 0
    peak = 0

    async def run(tensors: dict[str, np.ndarray]) -> Prediction:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return Prediction({"y": tensors["x"]})

    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=1, max_in_flight=3))
    await asyncio.gather(*(batcher.submit(_request(i)) for i in range(20)))
    assert peak == 3
    await batcher.close()


@pytest.mark.parametrize(("even_shares", "runners", "sizes"), [
    (True, None, [8, 8, 8, 8]),  # NOTE: 32 rows, 4 slots that each run: 8 each, not one batch and 3 idle slots
    (True, 2, [16, 16]),  # NOTE: 2 runners, 2 slots each: a share per runner (the other batch would wait)
    (False, None, [32]),
])
async def test_a_burst_is_shared_evenly_across_the_runners(even_shares: bool, runners: int | None,
                                                           sizes: list[int]) -> None:
    recorder = Recorder(delay_s=0.02)
    batcher = DynamicBatcher("p", recorder, BatchingConfig(max_batch_size=32, max_delay_ms=5, max_in_flight=4),
                             even_shares=even_shares)
    batcher.runners = runners
    answers = await asyncio.gather(*(batcher.submit(_request(i)) for i in range(32)))
    await batcher.close()
    assert [a["y"][0, 0] for a in answers] == [2 * i for i in range(32)]
    assert recorder.sizes == sizes


class Serial(Recorder):
    """Batches that take turns on one runner (as two slots of one Dask worker thread do)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.runner = asyncio.Lock()

    async def __call__(self, tensors: dict[str, np.ndarray]) -> Prediction:
        async with self.runner:
            return await super().__call__(tensors)


@pytest.mark.parametrize("runners", [1, None])
async def test_while_every_runner_is_busy_a_batch_gathers_its_share(runners: int | None) -> None:
    """8 clients in a closed loop, each back 0-10 ms after its answer, on 2 slots of one runner (40 ms a batch)."""
    serial = Serial(delay_s=0.04)
    batcher = DynamicBatcher("p", serial, BatchingConfig(max_batch_size=32, max_delay_ms=1, max_in_flight=2))
    batcher.runners = runners
    await batcher.submit(_request(0))  # NOTE: one batch measured first: the time a runner is held
    rng = np.random.default_rng(0)
    stop = time.monotonic() + 1.2

    async def client(i: int) -> None:
        while time.monotonic() < stop:
            assert (await batcher.submit(_request(i)))["y"][0, 0] == 2 * i
            await asyncio.sleep(rng.uniform(0, 0.01))

    await asyncio.gather(*(client(i) for i in range(8)))
    await batcher.close()
    sizes = serial.sizes[4:]
    mean = sum(sizes) / len(sizes)
    if runners == 1:
        # NOTE: the batch waits behind the running one anyway: it gathers towards its share (8 rows, 1 runner)
        assert mean >= 3.5, sizes
    else:
        # NOTE: as if each slot had a runner of its own: it leaves with whoever is queued when it frees
        assert mean < 3, sizes


async def test_close_fails_queued_requests_explicitly() -> None:
    batcher = DynamicBatcher("p", Recorder(delay_s=0.2), BatchingConfig(max_batch_size=1))
    tasks = [asyncio.ensure_future(batcher.submit(_request(i))) for i in range(3)]
    await asyncio.sleep(0.05)
    await batcher.close()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], Prediction)
    assert all(isinstance(r, BatcherClosed) for r in results[1:])
    with pytest.raises(BatcherClosed):
        await batcher.submit(_request(9))


def test_merge_pads_ragged_sequences_and_split_returns_views() -> None:
    a = {"ids": np.array([[1, 2, 3]]), "x": np.ones((1, 2))}
    b = {"ids": np.array([[4], [5]]), "x": np.zeros((2, 2))}
    merged = merge([a, b], {"ids": -1})
    np.testing.assert_array_equal(merged["ids"], [[1, 2, 3], [4, -1, -1], [5, -1, -1]])
    parts = split(merged, [1, 2])
    np.testing.assert_array_equal(parts[1]["x"], np.zeros((2, 2)))
    assert parts[1]["x"].base is merged["x"]
    with pytest.raises(ValueError, match="different ranks"):
        merge([{"ids": np.ones((1, 2))}, {"ids": np.ones((1, 2, 2))}])


async def test_in_process_runner_batches_a_real_pipeline(text_pipeline: Pipeline) -> None:
    batcher = DynamicBatcher("text", InProcessRunner(text_pipeline), BatchingConfig(max_batch_size=8, max_delay_ms=10))
    sentences = ["The striker scored twice.", "Rates went up.", "The app crashed after the update.",
                 "Doctors recommend daily exercise."] * 4
    results = await asyncio.gather(*(batcher.submit(text_pipeline.validate({"text": [s]})) for s in sentences))
    expected = text_pipeline.predict({"text": sentences})["topic"]
    assert [r["topic"][0] for r in results] == list(expected)
    stats = batcher.snapshot()
    assert stats["requests_total"] == 16 and stats["batches_total"] < 16
    assert set(stats["timings_ms"]) >= {"queue", "batch_formation", "tokenize", "encoder", "head"}
    assert stats["latency_ms"]["p99"] >= stats["latency_ms"]["p50"] > 0
    assert sum(stats["batch_size"]["histogram"].values()) == stats["batches_total"]
    await batcher.close()


async def test_a_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    run = Recorder(delay_s=0.05)
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=2, max_delay_ms=0, max_queue=4))
    admitted = [asyncio.ensure_future(batcher.submit(_request(i))) for i in range(3)]
    await asyncio.sleep(0.01)  # a batch of two in flight, the third request held for the next one
    admitted += [asyncio.ensure_future(batcher.submit(_request(i))) for i in range(3, 7)]
    await asyncio.sleep(0)
    assert batcher.queue_depth == 4
    with pytest.raises(Overloaded) as refused:
        await batcher.submit(_request(99))
    assert refused.value.status_code == 429 and refused.value.retry_after_s > 0
    assert "max_queue 4" in str(refused.value)
    results = await asyncio.gather(*admitted, return_exceptions=True)
    assert all(not isinstance(r, Exception) for r in results)  # the admitted ones are all answered
    assert batcher.snapshot()["rejected_total"] == 1
    await batcher.close()


async def test_a_request_past_its_deadline_is_not_run() -> None:
    run = Recorder(delay_s=0.1)
    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=1, max_delay_ms=0))
    busy = asyncio.ensure_future(batcher.submit(_request(1)))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceeded) as late:
        await batcher.submit(_request(2), timeout_s=0.02)
    assert late.value.status_code == 504 and "not run" in str(late.value)
    await busy
    assert run.sizes == [1]  # the expired request never reached the model
    assert (await batcher.submit(_request(3), timeout_s=5))["y"][0, 0] == 6
    await batcher.close()


async def test_gathering_while_busy_never_makes_a_request_miss_its_deadline() -> None:
    serial = Serial(delay_s=0.1)
    batcher = DynamicBatcher("p", serial, BatchingConfig(max_batch_size=32, max_delay_ms=1, max_in_flight=2))
    batcher.runners = 1
    await batcher.submit(_request(0))  # NOTE: a batch measured: gathering while busy may hold 50 ms
    running = asyncio.ensure_future(batcher.submit(_request(1)))
    await asyncio.sleep(0.01)
    # NOTE: the runner is busy for 90 ms more: this request gathers, but only until its 20 ms deadline,
    # so it is dispatched (and waits at the runner) instead of expiring while it gathers.
    answer = await batcher.submit(_request(2), timeout_s=0.02)
    assert answer["y"][0, 0] == 4
    await running
    await batcher.close()
    assert batcher.stats.expired_total == 0
