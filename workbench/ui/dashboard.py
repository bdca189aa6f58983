"""The dashboard: every component on one page, sharing one view-model and one refresh."""

from __future__ import annotations

import html
from typing import Any, ClassVar

import panel as pn

from workbench import __version__
from workbench.ui.activity import ActivityLog
from workbench.ui.batches import BatchSizeChart
from workbench.ui.component import Component
from workbench.ui.controls import ControlsPanel, message_pane
from workbench.ui.errors import ErrorChart
from workbench.ui.feed import Sample
from workbench.ui.latency import LatencyChart
from workbench.ui.monitoring import BusinessPanel, DriftPanel, QualityPanel
from workbench.ui.queue import QueueChart
from workbench.ui.stages import StageChart
from workbench.ui.summary import Summary
from workbench.ui.switching import SwitchingPanel
from workbench.ui.throughput import ThroughputChart
from workbench.ui.traffic import TrafficLabPanel
from workbench.ui.workers import WorkersTable

__all__ = ["COMPONENTS", "Dashboard"]

#: The components that are also served alone, at ``/dashboard/<route>``.
COMPONENTS: tuple[type[Component], ...] = (
    LatencyChart, ThroughputChart, QueueChart, BatchSizeChart, StageChart, ErrorChart, WorkersTable, ActivityLog,
    ControlsPanel, TrafficLabPanel, Summary, BusinessPanel, DriftPanel, QualityPanel, SwitchingPanel)

_PAGE = {"background": "#f3f5f7", "min-height": "100vh"}
_HEADER_CSS = """
.wb-header {display: flex; align-items: baseline; gap: 14px; font-family: system-ui, sans-serif; padding: 4px 6px}
.wb-header .t {font-size: 20px; font-weight: 650; color: #1d3557}
.wb-header .s {font-size: 12px; color: #57606a}
.wb-header a {color: #1f6feb}
"""


class Dashboard(Component):
    """Live charts, monitoring, workers, scaling, controls and the traffic lab of one engine.

    Examples
    --------
    >>> wb.dashboard("tabular")                            # doctest: +SKIP
    """

    route: ClassVar[str | None] = None

    def _build(self) -> pn.viewable.Viewable:
        state = self.state
        self.header = pn.pane.HTML("", stylesheets=[_HEADER_CSS], sizing_mode="stretch_width", margin=(6, 6, 0, 6))
        self.parts: dict[str, Component] = {
            "summary": Summary(state), "latency": LatencyChart(state), "throughput": ThroughputChart(state),
            "batches": BatchSizeChart(state), "stages": StageChart(state), "queue": QueueChart(state),
            "errors": ErrorChart(state), "workers": WorkersTable(state), "activity": ActivityLog(state),
            "controls": ControlsPanel(state, messages=False), "traffic": TrafficLabPanel(state, messages=False),
            "business": BusinessPanel(state), "drift": DriftPanel(state), "quality": QualityPanel(state),
            "switching": SwitchingPanel(state),
        }
        p = self.parts
        side = pn.Column(p["controls"], p["traffic"], width=330, margin=0)
        charts = pn.GridBox(p["latency"], p["throughput"], p["queue"], p["errors"], ncols=2,
                            sizing_mode="stretch_width")
        # NOTE: what the traffic does to the business, the data and the quality, right under its latency.
        monitoring = pn.Row(p["business"], pn.Column(p["drift"], p["quality"], width=460, margin=0),
                            sizing_mode="stretch_width")
        main = pn.Column(p["summary"], message_pane(state), charts, monitoring, p["batches"],
                         pn.Row(p["stages"], p["activity"], sizing_mode="stretch_width"), p["switching"], p["workers"],
                         sizing_mode="stretch_width", margin=0)
        return pn.Column(self.header, pn.Row(side, main, sizing_mode="stretch_width"), styles=_PAGE,
                         sizing_mode="stretch_width", css_classes=["wb-dashboard"])

    def update(self, sample: Sample, fresh: bool) -> None:
        cluster = sample.cluster
        workers = len(cluster.get("workers") or {})
        backend = str(cluster.get("kind", "?"))
        link = cluster.get("dashboard_link")
        details = [f"{html.escape(backend)} backend" + (f", {workers} workers" if backend != "inprocess" else ""),
                   f"{len(sample.stats)} pipelines deployed"]
        if link:
            details.append(f"<a href='{html.escape(str(link))}' target='_blank' rel='noopener'>Dask dashboard</a>")
        self.header.object = (f"<div class='wb-header'><span class='t'>Inference Workbench</span>"
                              f"<span class='s'>{' &middot; '.join(details)} &middot; v{html.escape(__version__)}"
                              "</span></div>")

    def stop(self) -> None:
        """Stop refreshing (in a notebook, when the view is no longer needed)."""
        self.state.stop()

    def __repr__(self) -> str:
        return f"Dashboard(pipeline={self.state.pipeline!r})"

    @classmethod
    def of(cls, hub: Any, pipeline: str | None = None) -> Dashboard:
        """A dashboard of ``hub``'s engine that refreshes from now on (what ``wb.dashboard()`` returns)."""
        view = cls.page(hub, pipeline)
        assert isinstance(view, Dashboard)
        return view
