"""The engine's Prometheus metrics: counted as requests complete, read from the engine when scraped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from workbench import InvalidInput
from workbench.batching import DeadlineExceeded, DynamicBatcher, Overloaded
from workbench.config import BatchingConfig
from workbench.engine import Engine
from workbench.errors import BackendUnavailable, StageFailed
from workbench.monitor import BatcherStats, DeploymentGauges, EngineGauges, Metrics
from workbench.pipeline import Prediction

ROWS = np.random.default_rng(0).random((2, 30), dtype=np.float32)


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples called ``name`` whose labels include ``labels``."""
    return [(s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()]


def value(text: str, name: str, **labels: str) -> float:
    found = samples(text, name, **labels)
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0][1]


async def test_an_engine_counts_requests_stages_and_batches(demo_home: Path) -> None:
    engine = Engine.inprocess()
    try:
        deployment = await engine.deploy("tabular")
        await asyncio.gather(*(engine.predict("tabular", {"features": ROWS}) for _ in range(6)))
        with pytest.raises(InvalidInput):
            await engine.predict("tabular", {"features": ROWS[:, :29]})
        text = engine.metrics_text()

        assert value(text, "workbench_requests_completed_total", pipeline="tabular") == 6
        assert value(text, "workbench_requests_failed_total", pipeline="tabular", code="400") == 1
        assert value(text, "workbench_requests_rejected_total", pipeline="tabular") == 0
        assert value(text, "workbench_request_duration_seconds_count", pipeline="tabular") == 6
        assert value(text, "workbench_request_duration_seconds_bucket", pipeline="tabular", le="+Inf") == 6
        stages = {labels["stage"]: count for labels, count in
                  samples(text, "workbench_stage_duration_seconds_count", pipeline="tabular")}
        assert set(stages) == {"queue", "batch_formation", *(s.name for s in deployment.pipeline.stages)}
        assert set(stages.values()) == {6}, "every request observes every part of its timings"
        assert value(text, "workbench_batch_size_rows_sum", pipeline="tabular") == 12
        batches = value(text, "workbench_batch_size_rows_count", pipeline="tabular")
        assert value(text, "workbench_batch_duration_seconds_count", pipeline="tabular") == batches

        assert value(text, "workbench_queue_depth", pipeline="tabular") == 0
        assert value(text, "workbench_workers", pipeline="tabular") == 1
        assert value(text, "workbench_backend_info", kind="inprocess") == 1
        assert value(text, "workbench_active_variant_info", pipeline="tabular", stage="model") == 1
        assert samples(text, "workbench_active_variant_info")[0][0]["variant"] == "gbt"
        # NOTE: the default latency budget (1 s) is the target of a pipeline deployed without one.
        assert samples(text, "workbench_latency_target_seconds") == [({"pipeline": "tabular"}, 1.0)]

        await engine.swap("tabular", "logreg")
        engine.set_latency_target("tabular", 250)
        await engine.predict("tabular", {"features": ROWS})
        text = engine.metrics_text()
        assert [labels["variant"] for labels, _ in samples(text, "workbench_active_variant_info")] == ["logreg"]
        assert value(text, "workbench_deployment_generation", pipeline="tabular") == 2
        assert value(text, "workbench_latency_target_seconds", pipeline="tabular") == 0.25
        assert value(text, "workbench_requests_completed_total", pipeline="tabular") == 7, "counting goes on"
    finally:
        await engine.close()


class Gate:
    """A run_batch that waits for ``opened`` and then answers, or raises ``failure`` when one is set."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.failure: Exception | None = None

    async def __call__(self, tensors: dict[str, np.ndarray]) -> Prediction:
        await self.opened.wait()
        if self.failure is not None:
            raise self.failure
        return Prediction({"y": tensors["x"]}, {"model": 0.2})


async def until(check: Any) -> None:
    while not check():
        await asyncio.sleep(0.001)


async def test_rejected_expired_and_failed_requests_are_counted_apart() -> None:
    metrics = Metrics()
    gate = Gate()
    batcher = DynamicBatcher("p", gate, BatchingConfig(max_batch_size=1, max_delay_ms=0, max_queue=1),
                             stats=BatcherStats(observer=metrics.observer("p")))
    x = {"x": np.ones((1, 2), dtype=np.float32)}
    running = asyncio.ensure_future(batcher.submit(x))
    await until(lambda: batcher.in_flight == 1)
    late = asyncio.ensure_future(batcher.submit(x, timeout_s=0.001))  # held for the busy slot, then expires
    for _ in range(10):  # NOTE: turns of the loop, not time: the batcher takes it off the queue to wait there
        await asyncio.sleep(0)
    assert batcher.queue_depth == 0
    queued = asyncio.ensure_future(batcher.submit(x))
    await until(lambda: batcher.queue_depth == 1)
    with pytest.raises(Overloaded):
        await batcher.submit(x)
    await asyncio.sleep(0.01)
    gate.opened.set()
    await asyncio.gather(running, queued)
    with pytest.raises(DeadlineExceeded):
        await late
    for failure in (StageFailed("stage 'model' failed", "model"), BackendUnavailable("no worker")):
        gate.failure = failure
        with pytest.raises(type(failure)):
            await batcher.submit(x)
    await batcher.close()

    text = metrics.text()
    assert value(text, "workbench_requests_completed_total", pipeline="p") == 2
    assert value(text, "workbench_requests_rejected_total", pipeline="p") == 1
    assert value(text, "workbench_requests_expired_total", pipeline="p") == 1
    assert value(text, "workbench_requests_failed_total", pipeline="p", code="500") == 1
    assert value(text, "workbench_requests_failed_total", pipeline="p", code="503") == 1
    assert value(text, "workbench_request_duration_seconds_count", pipeline="p") == 2
    assert value(text, "workbench_batch_size_rows_count", pipeline="p") == 4, "the expired request never ran"
    assert value(text, "workbench_batch_duration_seconds_count", pipeline="p") == 4


def test_histogram_buckets_span_microseconds_to_seconds() -> None:
    metrics = Metrics()
    observer = metrics.observer("p")
    for ms in (0.003, 0.04, 120.0, 20_000.0):
        observer.request_done({"total": ms})
    text = metrics.text()

    def below(le: str) -> float:
        return value(text, "workbench_request_duration_seconds_bucket", pipeline="p", le=le)

    assert (below("5e-06"), below("5e-05"), below("0.1"), below("0.25"), below("10.0"), below("+Inf")) == (
        1, 2, 2, 3, 3, 4)
    assert value(text, "workbench_request_duration_seconds_sum", pipeline="p") == pytest.approx(20.120043)


def test_gauges_are_read_when_scraped() -> None:
    state = EngineGauges("dask", [DeploymentGauges(
        "text", 3, {"encoder": "int8"}, queue_depth=5, in_flight=2, max_batch_size=16, max_delay_ms=20.0,
        max_in_flight=2, max_queue=100, mode="auto", latency_target_ms=150.0,
        workers=[{"address": "tcp://10.0.0.2:4000", "resources": {"GPU": 1}, "nthreads": 2, "in_flight": 1},
                 {"address": "tcp://10.0.0.3:4000", "resources": {}, "nthreads": 1, "in_flight": 0}])],
        {"enabled": True, "minimum": 1, "maximum": 4, "last": {"target": 3}})
    reads = []

    def read() -> EngineGauges:
        reads.append(state)
        return state

    metrics = Metrics(read)
    assert reads == []
    text = metrics.text()
    assert len(reads) == 1
    assert value(text, "workbench_queue_depth", pipeline="text") == 5
    assert value(text, "workbench_batches_in_flight", pipeline="text") == 2
    assert value(text, "workbench_active_variant_info", pipeline="text", stage="encoder", variant="int8") == 1
    assert value(text, "workbench_batching_mode_info", pipeline="text", mode="auto") == 1
    assert value(text, "workbench_batching_max_delay_seconds", pipeline="text") == 0.02
    assert value(text, "workbench_latency_target_seconds", pipeline="text") == 0.15
    assert value(text, "workbench_workers", pipeline="text") == 2
    assert value(text, "workbench_worker_resource", worker="tcp://10.0.0.2:4000", resource="GPU") == 1
    assert value(text, "workbench_worker_threads", worker="tcp://10.0.0.2:4000") == 2
    assert value(text, "workbench_worker_batches_in_flight", worker="tcp://10.0.0.3:4000") == 0
    assert (value(text, "workbench_autoscaling_enabled"), value(text, "workbench_autoscaling_min_workers"),
            value(text, "workbench_autoscaling_max_workers"), value(text, "workbench_autoscaling_target_workers"),
            ) == (1, 1, 4, 3)


def test_each_metrics_has_its_own_registry_and_takes_more_collectors() -> None:
    first, second = Metrics(), Metrics()
    first.observer("p").request_done({"total": 1.0})

    class Pauses:
        def collect(self) -> Any:
            yield GaugeMetricFamily("workbench_gc_pause_seconds", "Longest recent collector pause.", value=0.002)

    second.register(Pauses())
    assert value(first.text(), "workbench_requests_completed_total", pipeline="p") == 1
    assert samples(second.text(), "workbench_requests_completed_total") == []
    assert value(second.text(), "workbench_gc_pause_seconds") == 0.002
    with pytest.raises(ValueError, match="increasing"):
        Metrics(duration_buckets_s=(0.1, 0.01))
