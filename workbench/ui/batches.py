"""Batch sizes: requests per batch over time against ``max_batch_size``, and the distribution of batch sizes."""

from __future__ import annotations

from typing import Any

import panel as pn
from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d
from bokeh.plotting import figure

from workbench.ui.component import COLOURS, card, style_legend
from workbench.ui.feed import Sample
from workbench.ui.rows import histogram_rows
from workbench.ui.timeseries import TimeSeries, fmt

__all__ = ["BatchSizeChart"]


class BatchSizeChart(TimeSeries):
    """Requests per batch at each refresh with the ``max_batch_size`` knob, beside the batch-size histogram."""

    route = "batches"
    heading = "Batch sizes"
    y_label = "requests per batch"

    def _build(self) -> pn.viewable.Viewable:
        series = super()._build()
        assert isinstance(series, pn.Column)
        self.histogram = ColumnDataSource({"size": [], "batches": []}, name="batches-histogram")
        self.sizes, self.counts = FactorRange(), Range1d(start=0, end=1)
        fig = figure(x_range=self.sizes, height=210, sizing_mode="stretch_width", toolbar_location=None, tools="",
                     y_range=self.counts, min_border_left=44)
        fig.vbar(x="size", top="batches", source=self.histogram, width=0.8, color=COLOURS["bars"])
        fig.add_tools(HoverTool(tooltips=[("rows", "@size"), ("batches", "@batches")]))
        fig.xaxis.axis_label = "rows in the batch (last 60 s)"
        fig.yaxis.axis_label = "batches"
        for axis in (fig.xaxis, fig.yaxis):
            axis.axis_label_text_font_style = "normal"
            axis.axis_label_text_font_size = "11px"
        fig.axis.major_label_text_font_size = "10px"
        fig.xgrid.grid_line_color = None
        fig.ygrid.grid_line_color = "#eef1f4"
        fig.outline_line_color = None
        readout, chart = series.objects[1], series.objects[2]
        return card(self.heading, readout, pn.Row(chart, pn.pane.Bokeh(fig, sizing_mode="stretch_width"),
                                                  sizing_mode="stretch_width"))

    def hover(self) -> list[tuple[str, str]]:
        return [("per batch", "@per_batch{0.0}"), ("max_batch_size", "@max_batch_size{0}")]

    def draw(self, fig: Any, source: ColumnDataSource) -> None:
        fig.line("time", "per_batch", source=source, color=COLOURS["per_batch"], line_width=2,
                 legend_label="requests per batch")
        fig.step("time", "max_batch_size", source=source, color="#999999", line_dash="dashed", line_width=1.5,
                 mode="after", legend_label="max_batch_size")
        style_legend(fig)

    def describe(self, point: dict[str, float]) -> str:
        return (f"<b>{fmt(point['per_batch'], 1)}</b> requests per batch &nbsp;"
                f"max_batch_size <b>{fmt(point['max_batch_size'], 0)}</b>")

    def update(self, sample: Sample, fresh: bool) -> None:
        super().update(sample, fresh)
        stats = sample.stats.get(self.state.pipeline or "")
        rows = histogram_rows(stats) if stats is not None else {"size": [], "batches": []}
        if rows["size"] != list(self.sizes.factors):
            self.sizes.factors = rows["size"]
        self.counts.end = max(rows["batches"], default=0) * 1.1 or 1
        self.histogram.data = rows
