"""Throughput over time: requests answered per second, and how busy the deployment's workers were."""

from __future__ import annotations

import math
from typing import Any

from bokeh.models import ColumnDataSource, LinearAxis, Range1d

from workbench.ui.component import COLOURS, style_legend
from workbench.ui.timeseries import TimeSeries, fmt

__all__ = ["ThroughputChart"]


class ThroughputChart(TimeSeries):
    """Requests answered per second (left axis) and worker utilisation in percent (right axis)."""

    route = "throughput"
    heading = "Throughput"
    y_label = "requests/s"

    def hover(self) -> list[tuple[str, str]]:
        return [("throughput", "@throughput{0,0.0} req/s"), ("utilisation", "@utilisation{0} %")]

    def draw(self, fig: Any, source: ColumnDataSource) -> None:
        fig.varea("time", y1=0, y2="throughput", source=source, color=COLOURS["throughput"], alpha=0.12)
        fig.line("time", "throughput", source=source, color=COLOURS["throughput"], line_width=2,
                 legend_label="answered/s")
        fig.extra_y_ranges = {"utilisation": Range1d(start=0, end=105)}
        fig.add_layout(LinearAxis(y_range_name="utilisation", axis_label="% busy", axis_label_text_font_size="11px",
                                  axis_label_text_font_style="normal", major_label_text_font_size="10px",
                                  axis_line_color="#c9d1d9", minor_tick_line_color=None), "right")
        fig.line("time", "utilisation", source=source, y_range_name="utilisation", color=COLOURS["utilisation"],
                 line_width=1.5, line_dash="dotted", legend_label="workers busy %")
        style_legend(fig)

    def describe(self, point: dict[str, float]) -> str:
        busy = "" if math.isnan(point["utilisation"]) else f" &nbsp;workers {point['utilisation']:.0f}% busy"
        return f"<b>{fmt(point['throughput'], 1)}</b> requests/s{busy}"
