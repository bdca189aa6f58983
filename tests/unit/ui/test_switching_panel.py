"""The model-switching panel, and the façade it reads through: policy, candidates, reason, shadow comparison."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from waiting import eventually

from workbench.api import Workbench
from workbench.ui.dashboard import Dashboard

TEXTS = ["The striker scored twice in the second half", "The central bank raised interest rates"]


@pytest.fixture
def wb(demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workbench]:
    monkeypatch.setenv("WORKBENCH_UI_REFRESH_S", "0.05")
    with Workbench.inprocess() as workbench:
        yield workbench


def _shown(view: Dashboard, text: str, unless: str | None = None) -> str:
    """The panel's HTML once it shows ``text`` (and not ``unless``)."""

    def body() -> str | None:
        view.state.refresh()  # NOTE: a sample is taken at most once per refresh interval
        html: str = view.parts["switching"].body.object
        return html if text in html and (unless is None or unless not in html) else None

    shown = eventually(body, 10, f"the panel showing {text!r}")
    assert shown is not None
    return shown


def test_the_panel_shows_the_policy_candidates_and_the_shadow(wb: Workbench) -> None:
    wb.deploy("text")
    view: Dashboard = wb.dashboard("text")
    try:
        panel = view.parts["switching"]
        view.state.refresh()
        assert "policy <b>fixed</b>" in panel.body.object and "encoder: fp32" in panel.body.object

        wb.set_policy("text", "best-quality-within-target", target_p99_ms=500, candidates=["fp32", "int8"],
                      interval_s=0.1, dwell_s=60)
        for text in TEXTS:
            wb.predict("text", {"text": np.array([text], dtype=object)})
        switching = eventually(lambda: wb.stats("text")["switching"]["candidates"] and wb.stats("text")["switching"],
                               30, "a first decision")
        body = _shown(view, "policy <b>best-quality-within-target</b>")
        assert "policy <b>best-quality-within-target</b>" in body and "p99 target 500 ms" in body
        assert "predicted p99 ms" in body and "int8" in body and "(metadata)" in body
        assert switching["decision"]["action"] == "stay" and switching["active"] == "fp32"

        wb.shadow("text", "int8", fraction=1.0)
        for text in TEXTS:
            assert wb.predict("text", {"text": np.array([text], dtype=object)}).variants["encoder"] == "fp32"
        report = eventually(lambda: wb.stats("text")["shadow"]["compared"] == 2 and wb.stats("text")["shadow"],
                            30, "two mirrored requests compared")
        body = _shown(view, "shadow <b>int8</b>")
        assert "shadow <b>int8</b> on 100% of the traffic" in body and "2 compared" in body
        assert f"agreement <b>{report['agreement']['rate']:.1%}</b> of 2 rows" in body
        assert "int8 (shadow)" in body
        final = wb.stop_shadow("text")
        assert final is not None and final["compared"] == 2
        assert "shadow <b>" not in _shown(view, "policy <b>best-quality-within-target</b>", "shadow <b>")
    finally:
        view.stop()
