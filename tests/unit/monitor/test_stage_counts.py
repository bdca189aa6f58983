"""Counts that stages report per batch (cache hits, pairs ranked): carried by the batcher, totalled, exposed."""

from __future__ import annotations

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from workbench.batching.batcher import DynamicBatcher
from workbench.config import BatchingConfig
from workbench.monitor.metrics import Metrics
from workbench.monitor.stats import BatcherStats
from workbench.pipeline.graph import Prediction


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_counts_of_each_batch_are_totalled_in_stats_and_metrics() -> None:
    metrics = Metrics()
    batches = iter([{"embed": {"hits": 0, "misses": 4, "computed": 3}},
                    {"embed": {"hits": 3, "misses": 1, "computed": 1}, "rank": {"pairs": 12}}])

    async def run(tensors: dict[str, np.ndarray]) -> Prediction:
        return Prediction({"y": tensors["x"]}, {"embed": 1.0}, counters=next(batches))

    batcher = DynamicBatcher("p", run, BatchingConfig(max_batch_size=4, max_delay_ms=0),
                             stats=BatcherStats(observer=metrics.observer("p")))
    for _ in range(2):
        await batcher.submit({"x": np.ones((1, 2), dtype=np.float32)})
    await batcher.close()

    assert batcher.snapshot()["counts"] == {"embed": {"hits": 3, "misses": 5, "computed": 4}, "rank": {"pairs": 12}}
    scraped = samples(metrics.text())
    events = "workbench_stage_events_total"
    assert scraped[events, frozenset({("pipeline", "p"), ("stage", "embed"), ("event", "hits")})] == 3
    assert scraped[events, frozenset({("pipeline", "p"), ("stage", "embed"), ("event", "computed")})] == 4
    assert scraped[events, frozenset({("pipeline", "p"), ("stage", "rank"), ("event", "pairs")})] == 12
    assert scraped["workbench_feature_cache_hit_ratio", frozenset({("pipeline", "p"), ("stage", "embed")})] == 3 / 8
    assert not any(name == "workbench_feature_cache_hit_ratio" and ("stage", "rank") in labels
                   for name, labels in scraped)
