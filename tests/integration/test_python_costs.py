"""An allocation-heavy stage shows GC pauses in the stats; the tabular pipeline shows few."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import numpy as np
import pytest

from workbench.engine import Engine
from workbench.pipeline import Pipeline
from workbench.pipeline.custom import FunctionStage


class Node:
    def __init__(self, parent: Node | None) -> None:
        self.parent = parent
        self.children: list[Node] = []
        if parent is not None:
            parent.children.append(self)


def churn(x: np.ndarray) -> np.ndarray:
    """Many small objects with reference cycles per call: only the collector frees them."""
    for _ in range(20):
        root = Node(None)
        for _ in range(500):
            Node(root)
    return x


@pytest.fixture(autouse=True)
def default_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def gc_count(engine: Engine, name: str) -> int:
    return int(engine.stats(name)["python"]["serving"]["gc"]["collections_total"][0])


async def test_allocation_heavy_stage_shows_gc_pauses(tabular_pipeline: Pipeline) -> None:
    engine = Engine.inprocess()
    heavy = Pipeline("heavy", {"x": "float32[-1,4]"},
                     [FunctionStage(churn, inputs=["x"], outputs={"y": "float32[-1,4]"})])
    try:
        await engine.deploy(tabular_pipeline, batching={"max_batch_size": 1})
        await engine.deploy(heavy, batching={"max_batch_size": 1})
        rows = np.random.default_rng(0).normal(size=(1, 30)).astype(np.float32)
        before = gc_count(engine, "tabular")
        for _ in range(50):
            await engine.predict("tabular", {"features": rows})
        normal = gc_count(engine, "tabular") - before
        before = gc_count(engine, "heavy")
        for _ in range(50):
            await engine.predict("heavy", {"x": np.ones((1, 4), np.float32)})
        python = engine.stats("heavy")["python"]["serving"]
        heavy_collections = gc_count(engine, "heavy") - before
    finally:
        await engine.close()
    print(f"\ngen-0 collections over 50 requests: tabular {normal}, allocation-heavy {heavy_collections}")
    assert heavy_collections >= 20 and heavy_collections > 10 * max(normal, 1)
    window = python["gc"]
    assert window["by_generation"]["0"]["count"] >= heavy_collections
    assert 0 < window["longest_ms"] <= window["total_ms"]
    assert 0 <= python["gil"]["contention"] <= 1


async def test_stats_and_metrics_carry_python_costs(tabular_pipeline: Pipeline) -> None:
    engine = Engine.inprocess()
    try:
        await engine.deploy(tabular_pipeline)
        python = engine.stats("tabular")["python"]
        text = engine.metrics_text()
    finally:
        await engine.close()
    assert set(python) == {"serving", "workers"} and python["workers"] == {}
    assert set(python["serving"]) == {"gc", "gil"} and python["serving"]["gc"]["frozen_objects"] > 0
    assert 'workbench_python_gil_contention_ratio{process="serving"}' in text
