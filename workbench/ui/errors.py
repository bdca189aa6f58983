"""Errors and rejections over time: failed requests, and requests refused at the door (429)."""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource

from workbench.ui.component import COLOURS, style_legend
from workbench.ui.timeseries import TimeSeries, fmt

__all__ = ["ErrorChart"]


class ErrorChart(TimeSeries):
    """Failed requests per second (errors and expired deadlines) and rejected ones (queue full, over target)."""

    route = "errors"
    heading = "Errors and rejections"
    y_label = "requests/s"

    def hover(self) -> list[tuple[str, str]]:
        return [("errors", "@errors{0.0}/s"), ("rejected", "@rejections{0.0}/s")]

    def draw(self, fig: Any, source: ColumnDataSource) -> None:
        fig.line("time", "errors", source=source, color=COLOURS["errors"], line_width=2, legend_label="errors/s")
        fig.line("time", "rejections", source=source, color=COLOURS["rejections"], line_width=2,
                 legend_label="rejected/s")
        style_legend(fig)

    def describe(self, point: dict[str, float]) -> str:
        return (f"<b>{fmt(point['errors'], 1)}</b> errors/s &nbsp;"
                f"<b>{fmt(point['rejections'], 1)}</b> rejected/s")
