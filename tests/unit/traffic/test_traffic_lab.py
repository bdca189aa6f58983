"""The traffic lab against an in-process engine, and the requests it makes for a pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from workbench.engine import Engine
from workbench.pipeline.graph import Pipeline
from workbench.traffic import TrafficLab, request_maker


@pytest.fixture
async def engine(demo_home: Path) -> AsyncIterator[Engine]:
    engine = Engine.inprocess()
    await engine.deploy("tabular")
    yield engine
    await engine.close()


async def test_a_run_sends_until_stopped_and_reports_what_happened(engine: Engine) -> None:
    lab = TrafficLab(engine)
    started = lab.start("tabular", "steady", rate_rps=200)
    assert started["running"] and started["pattern"] == "steady" and started["rate_rps"] == 200
    await asyncio.sleep(0.5)
    assert lab.running("tabular")
    stopped = lab.stop("tabular")
    assert stopped is not None
    await lab.close()
    status = lab.status()["tabular"]
    assert not status["running"] and status["sent"] > 20 and status["ok"] == status["sent"] and status["failed"] == 0
    report = lab.report("tabular")
    assert report is not None and report["p50_ms"] > 0
    assert engine.stats("tabular")["requests_total"] == status["ok"]


async def test_starting_again_replaces_the_run_and_bad_settings_change_nothing(engine: Engine) -> None:
    lab = TrafficLab(engine)
    lab.start("tabular", "poisson", rate_rps=50)
    first = lab.status()["tabular"]["started"]
    with pytest.raises(ValueError, match="pattern must be one of"):
        lab.start("tabular", "sawtooth", rate_rps=50)
    with pytest.raises(ValueError, match="rate_rps must be > 0"):
        lab.start("tabular", "steady", rate_rps=0)
    assert lab.running("tabular") and lab.status()["tabular"]["started"] == first
    lab.start("tabular", "surge", rate_rps=10, period_s=2)
    assert lab.status()["tabular"]["pattern"] == "surge"
    assert lab.stop("nothing") is None
    await lab.close()


async def test_a_run_stops_when_its_pipeline_is_undeployed(engine: Engine) -> None:
    lab = TrafficLab(engine)
    lab.start("tabular", "steady", rate_rps=100)
    await asyncio.sleep(0.1)
    await engine.undeploy("tabular")
    lab.status()
    await lab.close()
    assert not lab.running("tabular")


def test_requests_fit_the_pipeline(tabular_pipeline: Pipeline, text_pipeline: Pipeline) -> None:
    tabular = request_maker(tabular_pipeline)(4)
    assert tabular["features"].shape == (4, 30) and tabular["features"].dtype == np.float32
    tabular_pipeline.validate(tabular)
    text = request_maker(text_pipeline)(3)
    assert text["text"].shape == (3,) and all(isinstance(s, str) and s for s in text["text"])
    text_pipeline.validate(text)


def test_other_pipelines_get_made_up_values_of_the_right_shape_and_dtype(tabular_pipeline: Pipeline) -> None:
    renamed = Pipeline.from_dict({**tabular_pipeline.to_dict(), "name": "other"},
                                 repository=tabular_pipeline.repository, load=False)
    rows = request_maker(renamed, seed=1)(2)["features"]
    assert rows.shape == (2, 30) and rows.dtype == np.float32
    renamed.validate({"features": rows})
