"""Where the time goes: each part of a request's latency (queue, batch formation, each stage, transfer)."""

from __future__ import annotations

import panel as pn
from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d
from bokeh.plotting import figure

from workbench.ui.component import COLOURS, Component, card
from workbench.ui.feed import Sample
from workbench.ui.rows import stage_rows

__all__ = ["StageChart"]


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
        return card("Where the time goes", pn.pane.Bokeh(fig, sizing_mode="stretch_width"))

    def update(self, sample: Sample, fresh: bool) -> None:
        stats = sample.stats.get(self.state.pipeline or "")
        rows = stage_rows(stats) if stats is not None else {"part": [], "p50": [], "p99": []}
        # NOTE: the first part is drawn at the top, as a request meets it first.
        parts = rows["part"][::-1]
        if parts != list(self.parts.factors):
            self.parts.factors = parts
        self.x_range.end = max(rows["p99"], default=0) * 1.08 or 1
        self.source.data = rows
