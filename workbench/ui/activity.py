"""What happened lately: scaling decisions as they are made, and the shown pipeline's events (swaps, knobs, tuner)."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Any

import panel as pn

from workbench.ui.component import Component, card
from workbench.ui.feed import Sample
from workbench.ui.workers import TABLE_CSS, table

__all__ = ["ActivityLog", "activity_rows"]

#: Fields of an event already shown in its own column.
_SHOWN = {"time", "event", "action", "reason"}


def activity_rows(autoscaling: Mapping[str, Any], events: list[Mapping[str, Any]], limit: int = 12) -> list[
        dict[str, Any]]:
    """Scaling decisions and deployment events, newest first: ``{"time", "source", "what", "details"}``."""
    rows = [{"time": d.get("time", 0.0), "source": "scaling", "what": str(d.get("action", "")),
             "details": _details(d)} for d in autoscaling.get("decisions") or ()]
    rows += [{"time": e.get("time", 0.0), "source": "pipeline", "what": str(e.get("event", "")),
              "details": _details(e)} for e in events]
    return sorted(rows, key=lambda r: r["time"], reverse=True)[:limit]


def _details(entry: Mapping[str, Any]) -> str:
    reason = entry.get("reason")
    if "from" in entry and "to" in entry:
        head = f"{entry['from']} → {entry['to']} workers"
        return f"{head}: {reason}" if reason else head
    rest = ", ".join(f"{k}={_short(v)}" for k, v in entry.items() if k not in _SHOWN and k not in ("from", "to"))
    return "; ".join(part for part in (str(reason) if reason else "", rest) if part)


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ActivityLog(Component):
    """Autoscaling state and decisions, and the events of the pipeline shown, newest first."""

    route = "activity"

    def _build(self) -> pn.viewable.Viewable:
        self.status = pn.pane.HTML("", stylesheets=[TABLE_CSS], sizing_mode="stretch_width", margin=(0, 4))
        self.body = pn.pane.HTML("", stylesheets=[TABLE_CSS], sizing_mode="stretch_width", margin=0)
        return card("Scaling and events", self.status, self.body)

    def update(self, sample: Sample, fresh: bool) -> None:
        scaling = sample.autoscaling
        if scaling.get("enabled"):
            last = scaling.get("last") or {}
            state = (f"autoscaling <b>on</b>: {scaling.get('minimum')} to {scaling.get('maximum')} workers"
                     + (f"; now aiming at {last.get('target')} ({html.escape(str(last.get('reason', '')))})"
                        if last else ""))
        else:
            state = "autoscaling <b>off</b>"
        self.status.object = f"<div class='wb-note'>{state}</div>"
        stats = sample.stats.get(self.state.pipeline or "") or {}
        rows = activity_rows(scaling, stats.get("events") or [])
        self.body.object = table(["time", "", "what", "details"], [
            [time.strftime("%H:%M:%S", time.localtime(r["time"])), html.escape(r["source"]), html.escape(r["what"]),
             html.escape(r["details"])] for r in rows]) if rows else "<div class='wb-note'>nothing yet</div>"
