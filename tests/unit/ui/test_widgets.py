"""The notebook widgets, driven as a user's clicks drive them, against an in-process Workbench.

A widget change must reach the engine (read back through ``wb.stats``), and a change
made through the engine must show in the widgets after a refresh, explicit or periodic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from waiting import eventually

from workbench.api import Workbench
from workbench.errors import NotDeployed
from workbench.ui import Controls, LiveView

ROWS = np.zeros((2, 30), dtype=np.float32)


@pytest.fixture
def wb(demo_home: Path) -> Iterator[Workbench]:
    with Workbench.inprocess() as workbench:
        workbench.deploy("tabular")
        yield workbench


@pytest.fixture
def controls(wb: Workbench) -> Iterator[Controls]:
    # NOTE: a long interval: these tests refresh by hand unless they test the periodic refresh.
    widgets = wb.controls("tabular", interval_s=60)
    yield widgets
    widgets.close()


def config(wb: Workbench) -> dict[str, object]:
    return dict(wb.stats("tabular")["config"])


def test_sliders_change_the_batching_knobs(wb: Workbench, controls: Controls) -> None:
    assert controls.max_batch_size.value == config(wb)["max_batch_size"] == 32
    controls.max_batch_size.value = 8
    controls.max_delay_ms.value = 2.5
    assert config(wb) == {"max_batch_size": 8, "max_delay_ms": 2.5, "mode": "dynamic", "max_in_flight": 1}
    assert "max_delay_ms = 2.5" in controls.status.value


def test_latency_target_and_auto_tune_toggle(wb: Workbench, controls: Controls) -> None:
    controls.latency_target_ms.value = 40
    assert wb.stats("tabular")["autoscaling"]["latency_target_ms"] == 40
    controls.autotune.value = True
    stats = wb.stats("tabular")
    assert stats["config"]["mode"] == "auto" and stats["autotune"]["running"]
    assert stats["autotune"]["target_p99_ms"] == 40
    # NOTE: the tuner owns the batching knobs while it runs.
    assert controls.max_batch_size.disabled and controls.max_delay_ms.disabled
    controls.autotune.value = False
    assert config(wb)["mode"] == "dynamic" and not wb.stats("tabular")["autotune"]["running"]
    assert not controls.max_batch_size.disabled
    controls.latency_target_ms.value = 0
    assert wb.stats("tabular")["autoscaling"]["latency_target_ms"] is None


def test_a_refused_change_springs_back_and_says_why(wb: Workbench, controls: Controls) -> None:
    controls.latency_target_ms.value = 0  # NOTE: no target: not even the default budget
    controls.autotune.value = True
    assert config(wb)["mode"] == "dynamic"
    assert controls.autotune.value is False
    assert "needs a latency target" in controls.status.value


def test_variant_selector_swaps_without_blocking(wb: Workbench, controls: Controls) -> None:
    selector = controls.variants["model"]
    assert selector.options == ("gbt", "logreg") and selector.value == "gbt"
    selector.value = "logreg"
    controls.wait(timeout_s=30)
    stats = wb.stats("tabular")
    assert stats["variants"] == {"model": "logreg"} and stats["generation"] == 2
    assert "swapped to logreg" in controls.status.value and not selector.disabled
    assert wb.predict("tabular", {"features": ROWS})["label"].shape == (2,)


def test_changes_made_through_the_engine_show_after_a_refresh(wb: Workbench, controls: Controls) -> None:
    wb.set_batching("tabular", max_batch_size=64, max_delay_ms=7)
    wb.set_latency_target("tabular", 25)
    wb.swap("tabular", "logreg")
    assert controls.max_batch_size.value == 32  # not yet refreshed
    controls.refresh()
    assert (controls.max_batch_size.value, controls.max_delay_ms.value) == (64, 7)
    assert controls.latency_target_ms.value == 25
    assert controls.variants["model"].value == "logreg"
    # NOTE: what a refresh writes does not call back into the engine.
    assert [e["event"] for e in wb.stats("tabular")["events"]].count("batching") == 1
    wb.set_batching("tabular", mode="auto")
    controls.refresh()
    assert controls.autotune.value is True


def test_the_periodic_refresh_follows_the_engine(wb: Workbench) -> None:
    controls = wb.controls("tabular", interval_s=0.05)
    try:
        wb.set_batching("tabular", max_batch_size=300)
        eventually(lambda: controls.max_batch_size.value == 300)
        assert controls.max_batch_size.max >= 300
    finally:
        controls.close()
    assert not controls.refreshing


def test_autoscaling_is_off_limits_in_process(wb: Workbench, controls: Controls) -> None:
    assert controls.autoscale.disabled and controls.workers.disabled
    controls.autoscale.value = True
    assert controls.autoscale.value is False
    assert "in-process" in controls.status.value


def test_live_view_draws_latency_and_throughput(wb: Workbench) -> None:
    wb.set_latency_target("tabular", 50)
    view = wb.live("tabular", interval_s=0.05, window_s=5)
    try:
        for _ in range(10):
            wb.predict("tabular", {"features": ROWS})
        eventually(lambda: view.samples[-1].throughput_rps > 0)
        html = view.widget.value
        assert "<svg" in html and "<polyline" in html and "req/s" in html
        assert "p99 target <b>50" in html
        sample = view.samples[-1]
        assert 0 < sample.p50 <= sample.p95 <= sample.p99
    finally:
        view.close()


def test_views_stop_when_the_workbench_closes(demo_home: Path) -> None:
    wb = Workbench.inprocess()
    wb.deploy("tabular")
    views: list[Controls | LiveView] = [wb.controls("tabular", interval_s=0.05), wb.live("tabular", interval_s=0.05)]
    wb.close()
    eventually(lambda: not any(v.refreshing for v in views))


def test_bad_arguments_are_refused(wb: Workbench) -> None:
    with pytest.raises(NotDeployed, match="'nothing'"):
        wb.controls("nothing")
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        wb.live("tabular", interval_s=0)
