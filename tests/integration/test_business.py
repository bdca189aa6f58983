"""Business metrics on the served tabular pipeline: shifted inputs move the risk mix and raise the flag.

The engine runs the real pipeline (ONNX Runtime, in-process); the monitor's clock is a
hand-moved one, so that "the baseline" and "the current window" are the rows sent before
and after a move, whatever the speed of the machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
from waiting import ManualClock

from workbench import Workbench
from workbench.demo.tabular import TabularData, load_tabular_data
from workbench.engine import Engine
from workbench.errors import WorkbenchError
from workbench.pipeline import Pipeline

#: Worst radius, worst perimeter, worst area and worst concave points: what drives the model to "malignant".
MALIGNANT_DRIVERS = [20, 22, 23, 27]


@pytest.fixture(scope="module")
def data() -> TabularData:
    return load_tabular_data()


@pytest.fixture
async def engine(tabular_pipeline: Pipeline) -> AsyncIterator[Engine]:
    engine = Engine.inprocess()
    await engine.deploy(tabular_pipeline, name="tabular")
    yield engine
    await engine.close()


async def feed(engine: Engine, rows: np.ndarray, size: int = 8) -> None:
    for start in range(0, len(rows), size):
        await engine.predict("tabular", {"features": rows[start:start + size]})


async def baseline_then(engine: Engine, data: TabularData, current: np.ndarray) -> dict[str, object]:
    clock = ManualClock(1000.0)
    engine.watch_business("tabular", clock=clock)
    await feed(engine, data.x_train)
    clock.now += 120.0  # the training rows are now two windows back: the baseline
    await feed(engine, current)
    business: dict[str, object] = engine.stats("tabular")["business"]
    return business


async def test_held_out_rows_keep_the_mix_and_raise_no_flag(engine: Engine, data: TabularData) -> None:
    business = await baseline_then(engine, data, data.x_test)
    gbt = business["variants"]["gbt"]  # type: ignore[index]
    assert (gbt["rows"], gbt["baseline_rows"]) == (len(data.x_test), len(data.x_train))
    risk = gbt["signals"]["risk"]
    assert risk["status"] == "ok" and business["shift"] is False
    assert abs(risk["rates"]["high"] - risk["baseline_rates"]["high"]) < 0.05
    assert gbt["signals"]["label"]["status"] == "ok"
    assert 'workbench_business_shift{pipeline="tabular",signal="risk",variant="gbt"} 0.0' in engine.metrics_text()


async def test_shifted_inputs_move_the_high_risk_share_and_raise_the_flag(engine: Engine, data: TabularData) -> None:
    shifted = data.x_test.copy()
    shifted[:, MALIGNANT_DRIVERS] *= 1.6
    business = await baseline_then(engine, data, shifted)
    risk = business["variants"]["gbt"]["signals"]["risk"]  # type: ignore[index]
    assert risk["rates"]["high"] > risk["baseline_rates"]["high"] + 0.2
    assert risk["status"] == "shift" and "high" in risk["shifted"] and risk["tests"]["high"]["z"] >= 4
    assert business["shift"] is True
    assert ("gbt", "label", "malignant") in {(s["variant"], s["signal"], s["value"])
                                             for s in business["shifts"]}  # type: ignore[attr-defined]
    text = engine.metrics_text()
    assert 'workbench_business_shift{pipeline="tabular",signal="risk",variant="gbt"} 1.0' in text
    high = next(line for line in text.splitlines() if line.startswith(
        'workbench_business_rate{pipeline="tabular",signal="risk",value="high",variant="gbt",window="current"}'))
    assert float(high.rsplit(" ", 1)[1]) == pytest.approx(risk["rates"]["high"])


async def test_each_variant_is_counted_apart(engine: Engine, data: TabularData) -> None:
    clock = ManualClock(1000.0)
    engine.watch_business("tabular", clock=clock)
    await feed(engine, data.x_test[:40])
    await engine.swap("tabular", "logreg")
    await feed(engine, data.x_test[40:])
    variants = engine.stats("tabular")["business"]["variants"]
    assert variants["gbt"]["rows"] == 40 and variants["logreg"]["rows"] == len(data.x_test) - 40
    assert sum(variants["logreg"]["signals"]["risk"]["counts"].values()) == len(data.x_test) - 40


async def test_a_pipeline_without_signals_has_no_business_metrics(data: TabularData,
                                                                  tabular_pipeline: Pipeline) -> None:
    plain = tabular_pipeline.to_dict()
    del plain["business"]
    engine = Engine.inprocess()
    try:
        await engine.deploy(Pipeline.from_dict(plain, load=True), name="plain")
        await engine.predict("plain", {"features": data.x_test[:4]})
        assert "business" not in engine.stats("plain")
        assert "workbench_business_rows{" not in engine.metrics_text()
        with pytest.raises(WorkbenchError, match="declares no business signals"):
            engine.watch_business("plain")
    finally:
        await engine.close()


def test_the_workbench_sets_the_windows_and_the_rule(tabular_pipeline: Pipeline) -> None:
    with Workbench.inprocess() as wb:
        wb.deploy(tabular_pipeline, name="tabular")
        report = wb.watch_business("tabular", window_s=5, baseline_windows=3, rule={"min_count": 10})
        assert (report["window_s"], report["baseline_s"], report["rule"]["min_count"]) == (5.0, 15.0, 10)
        wb.predict("tabular", {"features": load_tabular_data().x_test[:4]})
        business = wb.stats("tabular")["business"]
        assert business["window_s"] == 5.0 and business["variants"]["gbt"]["rows"] == 4
