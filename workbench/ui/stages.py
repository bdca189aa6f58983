"""Where the time goes: each part of a request's latency (queue, batch formation, each stage, transfer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import panel as pn
from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d
from bokeh.plotting import figure

from workbench.ui.component import COLOURS, Component, card
from workbench.ui.feed import Sample
from workbench.ui.rows import stage_rows

__all__ = ["StageChart", "python_line"]


class StageChart(Component):
    """p50 (dark) and p99 (light) time per part of a request, in pipeline order, over the last 60 s."""

    route = "stages"

    def _build(self) -> pn.viewable.Viewable:
        self.source = ColumnDataSource({"part": [], "p50": [], "p99": []}, name="stages-source")
        self.parts, self.x_range = FactorRange(), Range1d(start=0, end=1)
        fig = figure(y_range=self.parts, height=230, sizing_mode="stretch_width", toolbar_location=None,
                     tools="", x_range=self.x_range, min_border_left=44)
        fig.hbar(y="part", right="p99", source=self.source, height=0.7, color=COLOURS["bars_light"],
                 legend_label="p99")
        fig.hbar(y="part", right="p50", source=self.source, height=0.7, color=COLOURS["bars"], legend_label="p50")
        fig.add_tools(HoverTool(tooltips=[("part", "@part"), ("p50", "@p50{0.000} ms"), ("p99", "@p99{0.000} ms")]))
        fig.xaxis.axis_label = "ms per request"
        fig.xaxis.axis_label_text_font_style = "normal"
        fig.xaxis.axis_label_text_font_size = "11px"
        fig.axis.major_label_text_font_size = "11px"
        fig.ygrid.grid_line_color = None
        fig.xgrid.grid_line_color = "#eef1f4"
        fig.outline_line_color = None
        fig.legend.location = "bottom_right"
        fig.legend.label_text_font_size = "11px"
        fig.legend.background_fill_alpha = 0.7
        fig.legend.border_line_color = None
        self.figure = fig
        self.python = pn.pane.Markdown("", name="stages-python", margin=(0, 10), styles={"font-size": "11px"})
        return card("Where the time goes", pn.pane.Bokeh(fig, sizing_mode="stretch_width"), self.python)

    def update(self, sample: Sample, fresh: bool) -> None:
        stats = sample.stats.get(self.state.pipeline or "")
        rows = stage_rows(stats) if stats is not None else {"part": [], "p50": [], "p99": []}
        # NOTE: the first part is drawn at the top, as a request meets it first.
        parts = rows["part"][::-1]
        if parts != list(self.parts.factors):
            self.parts.factors = parts
        self.x_range.end = max(rows["p99"], default=0) * 1.08 or 1
        self.source.data = rows
        self.python.object = python_line(stats.get("python") if stats is not None else None)


def python_line(python: Mapping[str, Any] | None) -> str:
    """Python's own costs beside the stages: GC pauses and GIL contention per process, over the window."""
    if not python:
        return ""
    processes = {"serving": python.get("serving") or {}, **(python.get("workers") or {})}
    parts = []
    for process, figures in processes.items():
        gc_figures, gil = figures.get("gc") or {}, figures.get("gil") or {}
        parts.append(f"**{process}**: GC {gc_figures.get('count', 0)} pauses, {gc_figures.get('total_ms', 0):.1f} ms, "
                     f"longest {gc_figures.get('longest_ms', 0):.1f} ms · GIL {gil.get('contention', 0):.0%}")
    return "Python's own costs (window): " + "; ".join(parts)
