"""The base of the live charts: a Bokeh source fed by ``ColumnDataSource.stream`` at each refresh.

Each refresh streams only the points the chart does not have yet (one per
sample), so the browser receives a few numbers a second, never the whole
series; changing the pipeline shown replaces the series with that pipeline's
history.
"""

from __future__ import annotations

import math
from typing import Any

import panel as pn
from bokeh.models import ColumnDataSource

from workbench.ui.component import Component, card, time_figure
from workbench.ui.feed import Sample
from workbench.ui.rows import TIME_COLUMNS, columns

__all__ = ["TimeSeries"]


class TimeSeries(Component):
    """A card with one live time-series figure and a one-line readout of the latest point."""

    heading = "Chart"
    y_label = ""

    def _build(self) -> pn.viewable.Viewable:
        self.source = ColumnDataSource(columns([]), name=f"{self.route or 'chart'}-source")
        self._last_ms = -math.inf
        self.figure = time_figure(self.y_label, hover=self.hover())
        self.draw(self.figure, self.source)
        self.readout = pn.pane.HTML("", margin=(0, 6),
                                    stylesheets=[".wb-figures {font: 12px system-ui, sans-serif; color: #3d4852}"])
        return card(self.heading, self.readout, pn.pane.Bokeh(self.figure, sizing_mode="stretch_width"))

    def hover(self) -> list[tuple[str, str]]:
        return []

    def draw(self, fig: Any, source: ColumnDataSource) -> None:
        raise NotImplementedError

    def describe(self, point: dict[str, float]) -> str:
        """The readout of the latest point (HTML)."""
        return ""

    def update(self, sample: Sample, fresh: bool) -> None:
        name = self.state.pipeline
        if name is None:
            if fresh:
                self.source.data = columns([])
            return
        feed = self.hub.feed
        if fresh:
            points = feed.history(name)
            self.source.data = columns(points)
            self._last_ms = -math.inf
        else:
            points = feed.history(name, after_ms=self._last_ms)
            if not points:
                return
            self.source.stream(columns(points, TIME_COLUMNS), rollover=feed.size)
        if points:
            self._last_ms = points[-1]["time"]
            self.readout.object = f"<div class='wb-figures wb-{self.route}-figures'>{self.describe(points[-1])}</div>"


def fmt(value: float, digits: int = 2) -> str:
    """A number for a readout: ``-`` when there is none."""
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"
