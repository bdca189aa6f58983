"""The auto-tuner behind the engine: mode "auto" starts it, stats show it, another mode stops it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from workbench.api import Workbench
from workbench.engine import Engine
from workbench.pipeline import Pipeline

ROWS = np.random.default_rng(0).normal(size=(64, 30)).astype(np.float32)


async def test_auto_mode_runs_the_tuner_until_another_mode(tabular_pipeline: Pipeline) -> None:
    engine = Engine.inprocess()
    try:
        await engine.deploy(tabular_pipeline, name="tabular", batching={"target_p99_ms": None})
        with pytest.raises(ValueError, match="mode 'auto' needs a latency target"):
            engine.set_batching("tabular", mode="auto")
        assert engine.stats("tabular")["config"]["mode"] == "dynamic", "a refused change changes nothing"
        assert engine.stats("tabular")["autotune"]["running"] is False

        engine.set_batching("tabular", mode="auto", target_p99_ms=50)
        deployment = engine.deployment("tabular")
        tuner = deployment.autotuner
        assert tuner is not None and tuner.running and deployment.latency_target_ms == 50
        results = await asyncio.gather(*(engine.predict("tabular", {"features": ROWS[i:i + 1]}) for i in range(64)))
        assert all(len(r["label"]) == 1 for r in results)
        # NOTE: one decision now instead of waiting for the interval: it judges the requests just served.
        decision = tuner.tick()
        assert decision.action != "wait" and "target 50 ms" in decision.reason

        stats = engine.stats("tabular")
        auto = stats["autotune"]
        assert stats["config"]["mode"] == "auto"
        assert auto["running"] and auto["target_p99_ms"] == 50 and auto["reason"] == tuner.explain()
        assert auto["knobs"]["max_batch_size"] == stats["config"]["max_batch_size"]
        assert auto["table"] and {"p99_ms", "throughput_rps", "fill"} <= set(auto["table"][0])
        assert any(e["event"] == "autotune_started" for e in stats["events"])

        engine.set_batching("tabular", mode="dynamic")
        await asyncio.sleep(0)  # NOTE: a cancelled task ends at the loop's next turn
        assert not tuner.running and deployment.autotuner is None
        stats = engine.stats("tabular")
        assert stats["autotune"]["running"] is False and stats["autotune"]["target_p99_ms"] == 50
        assert stats["events"][-1]["event"] == "autotune_stopped"

        engine.set_latency_target("tabular", 20)
        engine.set_batching("tabular", mode="auto")
        tuner = deployment.autotuner
        assert tuner is not None and tuner.rules.target_p99_ms == 20
        engine.set_latency_target("tabular", 35)
        assert tuner.rules.target_p99_ms == 35 and deployment.autotuner is tuner
        await engine.undeploy("tabular")
        assert not tuner.running
    finally:
        await engine.close()


def test_workbench_deploys_in_auto_mode_and_follows_the_target(tabular_pipeline: Pipeline) -> None:
    with Workbench.inprocess() as wb:
        wb.deploy(tabular_pipeline, name="tabular", batching={"mode": "auto", "target_p99_ms": 40})
        auto = wb.stats("tabular")["autotune"]
        assert auto["running"] and auto["target_p99_ms"] == 40
        wb.set_latency_target("tabular", 25)
        assert wb.stats("tabular")["autotune"]["target_p99_ms"] == 25
        wb.set_batching("tabular", mode="realtime")
        assert wb.stats("tabular")["autotune"]["running"] is False
        assert wb.predict("tabular", {"features": ROWS[:2]})["label"].shape == (2,)
