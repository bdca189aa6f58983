"""Queue depth over time: requests waiting for a batch, and batches running on the workers."""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource

from workbench.ui.component import COLOURS, style_legend
from workbench.ui.timeseries import TimeSeries, fmt

__all__ = ["QueueChart"]


class QueueChart(TimeSeries):
    """Requests queued in the batcher and batches in flight, at each refresh."""

    route = "queue"
    heading = "Queue"
    y_label = "count"

    def hover(self) -> list[tuple[str, str]]:
        return [("queued", "@queue{0} requests"), ("in flight", "@in_flight{0} batches")]

    def draw(self, fig: Any, source: ColumnDataSource) -> None:
        fig.step("time", "queue", source=source, color=COLOURS["queue"], line_width=2, mode="after",
                 legend_label="requests queued")
        fig.step("time", "in_flight", source=source, color="#1d3557", line_width=1.5, line_dash="dashed",
                 mode="after", legend_label="batches in flight")
        style_legend(fig)

    def describe(self, point: dict[str, float]) -> str:
        return (f"<b>{fmt(point['queue'], 0)}</b> requests queued &nbsp;"
                f"<b>{fmt(point['in_flight'], 0)}</b> batches in flight")
