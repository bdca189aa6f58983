"""The knobs of the pipeline shown: pipeline, variant, placement, batching, latency target, auto-tune, autoscaling.

The widgets are built from the view-model (:class:`~workbench.ui.state.DashboardState`)
with ``pn.Param``; each change goes to the engine's own methods, the core the control API calls.
"""

from __future__ import annotations

import html

import panel as pn
import param

from workbench.ui.component import Component, card
from workbench.ui.state import DashboardState

__all__ = ["ControlsPanel", "message_pane"]

#: The widget of each knob; sliders apply when released, not at every step of a drag.
WIDGETS = {
    "pipeline": {"type": pn.widgets.Select, "css_classes": ["wb-pipeline"]},
    "variant": {"type": pn.widgets.Select, "css_classes": ["wb-variant"]},
    "placement": {"type": pn.widgets.Select, "css_classes": ["wb-placement"]},
    "max_batch_size": {"type": pn.widgets.IntSlider, "throttled": True, "start": 1, "end": 256,
                       "css_classes": ["wb-max-batch-size"]},
    "max_delay_ms": {"type": pn.widgets.FloatSlider, "throttled": True, "start": 0.0, "end": 50.0, "step": 0.5,
                     "css_classes": ["wb-max-delay"]},
    "target_p99_ms": {"type": pn.widgets.FloatInput, "placeholder": "none", "start": 0.1,
                      "css_classes": ["wb-target"]},
    "auto_tune": {"type": pn.widgets.Checkbox, "css_classes": ["wb-auto-tune"]},
    "autoscaling": {"type": pn.widgets.Checkbox, "css_classes": ["wb-autoscaling"]},
    "min_workers": {"type": pn.widgets.IntInput, "start": 0, "css_classes": ["wb-min-workers"]},
    "max_workers": {"type": pn.widgets.IntInput, "start": 1, "css_classes": ["wb-max-workers"]},
}


def message_pane(state: DashboardState) -> pn.pane.HTML:
    """One line saying what the last action did, red when it failed."""

    def render(message: str, failed: bool) -> str:
        if not message:
            return ""
        colour, background = ("#b42318", "#fef3f2") if failed else ("#1a7f37", "#eefbf1")
        return (f"<div class='wb-message' style='color:{colour};background:{background};padding:4px 8px;"
                f"border-radius:6px;font:12px system-ui,sans-serif'>{html.escape(message)}</div>")

    return pn.pane.HTML(pn.bind(render, state.param.message, state.param.failed), sizing_mode="stretch_width",
                        margin=(2, 4))


class ControlsPanel(Component):
    """Every knob of the pipeline shown, mirrored from the engine and applied through it."""

    route = "controls"
    messages = param.Boolean(default=True, doc="Show the outcome of the last action under the knobs.")

    def _build(self) -> pn.viewable.Viewable:
        batching = pn.Param(self.state, parameters=["pipeline", "variant", "placement"], widgets=WIDGETS,
                            show_name=False, sizing_mode="stretch_width", margin=0)
        placed = pn.pane.HTML(pn.bind(_placed_line, self.state.param.placed), sizing_mode="stretch_width",
                              margin=(0, 10))
        knobs = pn.Param(self.state, parameters=["max_batch_size", "max_delay_ms", "target_p99_ms", "auto_tune"],
                         widgets=WIDGETS, show_name=False, sizing_mode="stretch_width", margin=0)
        scaling = pn.Param(self.state, parameters=["autoscaling", "min_workers", "max_workers"], widgets=WIDGETS,
                           show_name=False, sizing_mode="stretch_width", margin=0)
        parts: list[pn.viewable.Viewable] = [batching, placed, knobs, scaling]
        if self.messages:
            parts.append(message_pane(self.state))
        return card("Controls", *parts)


def _placed_line(text: str) -> str:
    return (f"<div class='wb-placed' style='color:#555;font:12px system-ui,sans-serif'>{html.escape(text)}</div>"
            if text else "")
