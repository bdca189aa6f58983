"""Light batches run on the event loop, others on the deployment's lanes: the gate and the runner that follows it."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from workbench.backend.inprocess import InlineGate, InProcessRunner
from workbench.demo.tabular import load_tabular_data
from workbench.pipeline import Pipeline
from workbench.pipeline.custom import FunctionStage
from workbench.pipeline.graph import Prediction


def test_nothing_runs_inline_before_a_batch_is_measured() -> None:
    gate = InlineGate(1.0)
    assert gate.bound_ms(1) is None and not gate.allows(1)
    gate.add(1, 0.2)
    assert gate.allows(1)


def test_a_batch_is_judged_by_recent_batches_of_its_size_or_larger() -> None:
    gate = InlineGate(1.0)
    for _ in range(4):
        gate.add(1, 0.1)
        gate.add(16, 0.9)
    assert gate.bound_ms(1) == pytest.approx(0.9)  # NOTE: the batches of 16 cover one row too
    assert gate.bound_ms(16) == pytest.approx(0.9) and gate.allows(16)
    # NOTE: larger than any recent batch: scaled from the largest, as if it cost per row only
    assert gate.bound_ms(32) == pytest.approx(1.8) and not gate.allows(32)


def test_a_rare_slow_batch_does_not_move_the_bound_but_a_run_of_them_does() -> None:
    gate = InlineGate(1.0, size=16)
    for _ in range(15):
        gate.add(4, 0.2)
    gate.add(4, 30.0)  # a pause, or the machine's other work
    assert gate.allows(4)
    for _ in range(4):
        gate.add(4, 5.0)
    assert not gate.allows(4)
    for _ in range(16):
        gate.add(4, 0.2)
    assert gate.allows(4)  # NOTE: forgotten once 16 light batches followed


def test_a_zero_bound_sends_everything_to_the_lanes_and_a_negative_one_is_refused() -> None:
    gate = InlineGate(0.0)
    gate.add(1, 0.0)
    assert not gate.allows(1)
    with pytest.raises(ValueError, match="inline_below_ms"):
        InlineGate(-1.0)


class Recorded:
    """A pipeline's ``execute`` that notes the thread each batch ran on."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline, self.threads = pipeline, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipeline, name)

    def execute(self, tensors: dict[str, np.ndarray]) -> Prediction:
        self.threads.append(threading.current_thread().name)
        return self.pipeline.execute(tensors)


def _rows(count: int) -> dict[str, np.ndarray]:
    features = load_tabular_data().x_test[:count].astype(np.float32)
    return {"features": features}


async def test_a_light_pipeline_runs_on_the_loop_once_measured_with_the_same_answers(
        tabular_pipeline: Pipeline) -> None:
    runner = InProcessRunner(tabular_pipeline)
    recorded = Recorded(tabular_pipeline)
    runner.pipeline = recorded  # type: ignore[assignment]
    try:
        answers = [await runner(_rows(3)) for _ in range(4)]
    finally:
        await runner.aclose()
    loop_thread = threading.current_thread().name
    assert recorded.threads[0].startswith("lane-tabular") and recorded.threads[1:] == [loop_thread] * 3
    assert runner.runs == {"inline": 3, "lane": 1}
    assert runner.describe() == {"runs": {"inline": 3, "lane": 1}, "lanes": 1, "inline_below_ms": 1.0}
    expected = tabular_pipeline.execute(_rows(3)).outputs
    for answer in answers:
        assert answer.variants == {"model": "gbt"}
        for name, value in expected.items():
            assert_array_equal(answer.outputs[name], value)


async def test_batches_costlier_than_the_bound_stay_on_the_lanes(tabular_pipeline: Pipeline) -> None:
    runner = InProcessRunner(tabular_pipeline, inline_below_ms=1e-6)
    try:
        for _ in range(3):
            await runner(_rows(2))
    finally:
        await runner.aclose()
    assert runner.runs == {"inline": 0, "lane": 3}


async def test_user_code_never_runs_on_the_loop() -> None:
    double = FunctionStage(lambda x: x * 2, inputs=["x"], outputs={"y": "float32[-1]"}, name="double")
    pipeline = Pipeline("user", {"x": "float32[-1]"}, [double])
    runner = InProcessRunner(pipeline)
    try:
        for _ in range(3):
            answer = await runner({"x": np.ones(2, np.float32)})
    finally:
        await runner.aclose()
    assert_array_equal(answer.outputs["y"], [2.0, 2.0])
    assert runner.runs == {"inline": 0, "lane": 3} and runner.describe()["inline_below_ms"] == 0.0
