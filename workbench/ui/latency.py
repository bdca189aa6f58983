"""Latency over time: p50, p95 and p99 of the last seconds, with the latency target drawn."""

from __future__ import annotations

import math
from typing import Any

from bokeh.models import ColumnDataSource

from workbench.ui.component import COLOURS, style_legend
from workbench.ui.timeseries import TimeSeries, fmt

__all__ = ["LatencyChart"]


class LatencyChart(TimeSeries):
    """p50/p95/p99 end-to-end latency (ms) of the last two seconds, refreshed each second; the target dashed."""

    route = "latency"
    heading = "Latency"
    y_label = "ms"

    def hover(self) -> list[tuple[str, str]]:
        return [("p50", "@p50{0.00} ms"), ("p95", "@p95{0.00} ms"), ("p99", "@p99{0.00} ms"),
                ("target", "@target{0.0} ms")]

    def draw(self, fig: Any, source: ColumnDataSource) -> None:
        for quantile, width in (("p99", 2.2), ("p95", 1.6), ("p50", 2.2)):
            fig.line("time", quantile, source=source, color=COLOURS[quantile], line_width=width, legend_label=quantile)
        fig.line("time", "target", source=source, color=COLOURS["target"], line_dash="dashed", line_width=1.6,
                 legend_label="target")
        style_legend(fig)

    def describe(self, point: dict[str, float]) -> str:
        target = point["target"]
        met = ""
        if not math.isnan(target) and not math.isnan(point["p99"]):
            ok = point["p99"] <= target
            met = (f" &nbsp;<span style='color:{'#2a9d8f' if ok else '#d62828'}'>"
                   f"{'within' if ok else 'over'} target {target:g} ms</span>")
        return (f"<b>p50</b> {fmt(point['p50'])} &nbsp;<b>p95</b> {fmt(point['p95'])} &nbsp;"
                f"<b>p99</b> {fmt(point['p99'])} ms{met}")
