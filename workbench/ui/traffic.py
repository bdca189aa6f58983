"""The traffic lab: start and stop load with a pattern and a rate against the pipeline shown."""

from __future__ import annotations

import html
from typing import Any

import panel as pn
import param

from workbench.ui.component import Component, card
from workbench.ui.controls import message_pane
from workbench.ui.feed import Sample

__all__ = ["TrafficLabPanel", "describe_run"]

WIDGETS = {
    "traffic_pattern": {"type": pn.widgets.Select, "css_classes": ["wb-traffic-pattern"]},
    "traffic_rate": {"type": pn.widgets.FloatSlider, "throttled": True, "start": 1.0, "end": 2000.0, "step": 1.0,
                     "css_classes": ["wb-traffic-rate"]},
    "start_traffic": {"type": pn.widgets.Button, "color": "primary", "css_classes": ["wb-traffic-start"]},
    "stop_traffic": {"type": pn.widgets.Button, "color": "default", "css_classes": ["wb-traffic-stop"]},
}


def describe_run(run: dict[str, Any] | None) -> str:
    """One line on a traffic lab run (plain text)."""
    if run is None:
        return "no traffic from the lab"
    state = "sending" if run["running"] else "stopped"
    errors = ", ".join(f"{kind} {count}" for kind, count in sorted(run["errors"].items()))
    return (f"{state}: {run['pattern']} at {run['rate_rps']:g} requests/s for {run['seconds']:g} s; "
            f"sent {run['sent']:,}, answered {run['ok']:,}, failed {run['failed']:,}"
            + (f" ({errors})" if errors else ""))


class TrafficLabPanel(Component):
    """Pattern and rate of the load, start and stop buttons, and how the current run goes."""

    route = "traffic"
    messages = param.Boolean(default=True, doc="Show the outcome of the last action under the buttons.")

    def _build(self) -> pn.viewable.Viewable:
        settings = pn.Param(self.state, parameters=["traffic_pattern", "traffic_rate"], widgets=WIDGETS,
                            show_name=False, sizing_mode="stretch_width", margin=0)
        buttons = pn.Param(self.state, parameters=["start_traffic", "stop_traffic"], widgets=WIDGETS,
                           show_name=False, default_layout=pn.Row, sizing_mode="stretch_width", margin=0)
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", margin=(2, 6),
                                   stylesheets=[".wb-run {font: 12px system-ui, sans-serif; color: #3d4852}"])
        parts: list[pn.viewable.Viewable] = [settings, buttons, self.status]
        if self.messages:
            parts.append(message_pane(self.state))
        return card("Traffic lab", *parts)

    def update(self, sample: Sample, fresh: bool) -> None:
        name = self.state.pipeline
        lines = [f"<b>{html.escape(name)}</b>: {html.escape(describe_run(sample.traffic.get(name)))}"] if name else []
        others = [f"{html.escape(other)}: {html.escape(describe_run(run))}"
                  for other, run in sorted(sample.traffic.items()) if other != name and run["running"]]
        self.status.object = "<div class='wb-run'>" + "<br>".join(lines + others) + "</div>"
