"""``wb.dashboard()`` against an in-process Workbench: its view-model drives the engine, and mirrors it.

The refreshes are made by hand here (``state.refresh()``), as a periodic callback makes them
in a notebook or a browser session; the browser tests drive the real thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from workbench.api import Workbench
from workbench.ui.dashboard import Dashboard

ROWS = np.zeros((2, 30), dtype=np.float32)


def eventually(check: Callable[[], bool], refresh: Callable[[], None], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        refresh()
        if check():
            return
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.05)


@pytest.fixture
def wb(demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workbench]:
    monkeypatch.setenv("WORKBENCH_UI_REFRESH_S", "0.05")
    with Workbench.inprocess() as workbench:
        workbench.deploy("tabular")
        yield workbench


@pytest.fixture
def dashboard(wb: Workbench) -> Iterator[Dashboard]:
    view = wb.dashboard("tabular")
    yield view
    view.stop()


def test_the_charts_grow_with_each_refresh(wb: Workbench, dashboard: Dashboard) -> None:
    latency = dashboard.parts["latency"].source
    before = len(latency.data["time"])
    assert before >= 1
    for _ in range(20):
        wb.predict("tabular", {"features": ROWS})
    eventually(lambda: len(latency.data["time"]) >= before + 2, dashboard.state.refresh)
    assert latency.data["p50"][-1] > 0
    stages = dashboard.parts["stages"].source.data["part"]
    assert stages[0] == "queue" and "model" in stages
    assert sum(dashboard.parts["batches"].histogram.data["batches"]) >= 1
    assert "tabular: model on CPU" in dashboard.parts["workers"].body.object


def test_knobs_go_through_the_engine_and_come_back_from_it(wb: Workbench, dashboard: Dashboard) -> None:
    state = dashboard.state
    state.max_batch_size = 8
    state.max_delay_ms = 1.5
    config = wb.stats("tabular")["config"]
    assert (config["max_batch_size"], config["max_delay_ms"]) == (8, 1.5)
    wb.set_batching("tabular", max_batch_size=12)
    eventually(lambda: state.max_batch_size == 12, state.refresh)
    assert dashboard.parts["batches"].source.data["max_batch_size"][-1] == 12


def test_auto_tune_needs_a_latency_target_and_says_so(wb: Workbench, dashboard: Dashboard) -> None:
    state = dashboard.state
    assert state.target_p99_ms == 1000.0, "the default latency budget, shown"
    state.target_p99_ms = None
    state.auto_tune = True
    assert state.failed and "latency target" in state.message
    eventually(lambda: state.auto_tune is False, state.refresh)
    state.target_p99_ms = 40.0
    state.auto_tune = True
    assert not state.failed
    assert wb.stats("tabular")["config"]["mode"] == "auto"
    assert wb.autoscaling("tabular")["latency_target_ms"] == 40.0
    state.auto_tune = False
    assert wb.stats("tabular")["config"]["mode"] == "dynamic"


def test_choosing_a_variant_swaps_it_and_says_when_done(wb: Workbench, dashboard: Dashboard) -> None:
    state = dashboard.state
    assert state.variant == "model: gbt"
    assert state.param.variant.objects == ["model: gbt", "model: logreg"]
    state.variant = "model: logreg"
    eventually(lambda: "done" in state.message, state.refresh)
    assert wb.stats("tabular")["variants"] == {"model": "logreg"}
    assert state.variant == "model: logreg"


def test_the_traffic_lab_starts_and_stops_from_the_view(wb: Workbench, dashboard: Dashboard) -> None:
    state = dashboard.state
    state.param.update(traffic_pattern="steady", traffic_rate=200.0)
    state.param.trigger("start_traffic")
    traffic = dashboard.parts["traffic"]
    eventually(lambda: "sending: steady at 200 requests/s" in traffic.status.object
               and wb.stats("tabular")["requests_total"] > 10, state.refresh)
    state.param.trigger("stop_traffic")
    eventually(lambda: "stopped" in traffic.status.object, state.refresh)


def test_autoscaling_in_process_is_refused_with_the_reason(dashboard: Dashboard) -> None:
    state = dashboard.state
    state.autoscaling = True
    assert state.failed and "in-process" in state.message
    eventually(lambda: state.autoscaling is False, state.refresh)


def test_each_component_stands_alone(wb: Workbench, dashboard: Dashboard) -> None:
    from workbench.ui.dashboard import COMPONENTS

    hub = dashboard.hub
    for component in COMPONENTS:
        view = component.page(hub, "tabular")
        try:
            assert view.state is not dashboard.state and view.state.pipeline == "tabular"
            view.__panel__().get_root()
        finally:
            view.state.stop()
