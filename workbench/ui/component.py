"""The base of every dashboard piece, and the few styles they share.

A component shows one side of the pipeline that its
:class:`~workbench.ui.state.DashboardState` has chosen and refreshes with each
sample. Components compose into the dashboard (one state for all of them) and
each one also stands alone: :meth:`Component.page` builds it with a state of
its own, which is what the route table serves at ``/dashboard/<name>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import panel as pn
from bokeh.models import DataRange1d, DatetimeTickFormatter, HoverTool
from bokeh.plotting import figure
from panel.viewable import Viewer

from workbench.ui.feed import Sample
from workbench.ui.state import DashboardState

if TYPE_CHECKING:
    from workbench.ui.hub import Hub

__all__ = ["COLOURS", "Component", "card", "time_figure"]

#: One palette for every chart (the notebook widgets use the same colours for the same series).
COLOURS = {"p50": "#2a9d8f", "p95": "#e9c46a", "p99": "#e76f51", "throughput": "#264653", "target": "#d62828",
           "queue": "#457b9d", "in_flight": "#a8dadc", "errors": "#d62828", "rejections": "#f4a261",
           "per_batch": "#6a4c93", "utilisation": "#8ab17d", "bars": "#457b9d", "bars_light": "#bcd4e6"}

#: How much of the past the time series show, in ms.
WINDOW_MS = 5 * 60 * 1000

_CARD = {"background": "#ffffff", "border": "1px solid #e3e7ec", "border-radius": "8px",
         "box-shadow": "0 1px 2px rgba(16, 24, 40, 0.05)", "padding": "6px 10px"}


def card(title: str, *objects: Any, **params: Any) -> pn.Column:
    """A white panel with a small title, holding ``objects``."""
    heading = pn.pane.HTML(f"<div class='wb-title'>{title}</div>", margin=(4, 4, 0, 4),
                           stylesheets=[".wb-title {font: 600 13px system-ui, sans-serif; color: #1d3557;"
                                        " text-transform: uppercase; letter-spacing: .04em}"])
    params.setdefault("sizing_mode", "stretch_width")
    return pn.Column(heading, *objects, styles=_CARD, margin=6, **params)


def time_figure(y_label: str, *, height: int = 210, hover: list[tuple[str, str]] | None = None) -> Any:
    """A figure with a datetime x axis that follows the newest point, styled like the rest of the dashboard."""
    fig = figure(x_axis_type="datetime", height=height, sizing_mode="stretch_width", toolbar_location=None,
                 tools="", x_range=DataRange1d(follow="end", follow_interval=WINDOW_MS, range_padding=0),
                 y_range=DataRange1d(start=0, range_padding=0.1), min_border_left=44, min_border_right=12)
    fig.yaxis.axis_label = y_label
    # NOTE: clock times only, whatever the zoom (the first seconds would otherwise read "0ms, 500ms").
    clock = "%H:%M:%S"
    fig.xaxis.formatter = DatetimeTickFormatter(milliseconds=clock, seconds=clock, minsec=clock, minutes="%H:%M",
                                                hourmin="%H:%M", hours="%H:%M", context=None)
    fig.yaxis.axis_label_text_font_style = "normal"
    fig.yaxis.axis_label_text_font_size = "11px"
    fig.axis.major_label_text_font_size = "10px"
    fig.axis.axis_line_color = "#c9d1d9"
    fig.axis.major_tick_line_color = "#c9d1d9"
    fig.axis.minor_tick_line_color = None
    fig.grid.grid_line_color = "#eef1f4"
    fig.outline_line_color = None
    fig.background_fill_color = "#ffffff"
    if hover:
        fig.add_tools(HoverTool(tooltips=[("time", "@time{%H:%M:%S}"), *hover], formatters={"@time": "datetime"},
                                mode="vline"))
    return fig


def style_legend(fig: Any) -> None:
    """One line of legend above the plot, where it hides no data; a click on an entry hides its line."""
    fig.add_layout(fig.legend[0], "above")
    fig.legend.location = "top_left"
    fig.legend.orientation = "horizontal"
    fig.legend.background_fill_alpha = 0.7
    fig.legend.border_line_color = None
    fig.legend.label_text_font_size = "11px"
    fig.legend.glyph_width = 14
    fig.legend.spacing = 6
    fig.legend.padding = 2
    fig.legend.click_policy = "hide"


class Component(Viewer):
    """A view of the state's pipeline, refreshed with each sample (see :meth:`update`)."""

    #: Path of the component on its own, under ``/dashboard/`` (``None``: not served alone).
    route: ClassVar[str | None] = None
    #: Title of the page that serves it alone.
    title: ClassVar[str] = "Inference Workbench"

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.hub: Hub = state.hub
        self._layout = self._build()
        state.subscribe(self.update)

    def _build(self) -> pn.viewable.Viewable:
        raise NotImplementedError

    def update(self, sample: Sample, fresh: bool) -> None:
        """Show ``sample``; ``fresh`` when the pipeline shown has changed since the last update."""

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    @classmethod
    def page(cls, hub: Hub, pipeline: str | None = None) -> Component:
        """This component alone, on a state of its own that refreshes from now on."""
        state = DashboardState(hub, pipeline=pipeline)
        view = cls(state)
        state.start()
        return view
