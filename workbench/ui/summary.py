"""The headline numbers of the pipeline shown: latency, throughput, queue, batching, errors, variant."""

from __future__ import annotations

import html
import math

import panel as pn

from workbench.ui.component import Component
from workbench.ui.feed import Sample

__all__ = ["Summary"]

CSS = """
.wb-kpis {display: flex; flex-wrap: wrap; gap: 8px; font-family: system-ui, sans-serif}
.wb-kpi {background: #fff; border: 1px solid #e3e7ec; border-radius: 8px; padding: 6px 12px; min-width: 110px}
.wb-kpi .v {font-size: 20px; font-weight: 600; color: #1d3557; font-variant-numeric: tabular-nums}
.wb-kpi .l {font-size: 11px; color: #57606a; text-transform: uppercase; letter-spacing: .04em}
.wb-kpi.bad .v {color: #d62828}
"""


def _figure(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


class Summary(Component):
    """A row of tiles with the latest point of the pipeline shown."""

    route = "summary"

    def _build(self) -> pn.viewable.Viewable:
        self.tiles = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width", margin=(4, 6),
                                  css_classes=["wb-summary"])
        return self.tiles

    def update(self, sample: Sample, fresh: bool) -> None:
        name = self.state.pipeline
        point = self.hub.feed.last_point(name) if name else None
        stats = sample.stats.get(name or "")
        if point is None or stats is None:
            self.tiles.object = ("<div class='wb-kpis'><div class='wb-kpi'><div class='l'>no pipeline deployed</div>"
                                 "</div></div>")
            return
        over = not math.isnan(point["target"]) and point["p99"] > point["target"]
        variants = ", ".join(f"{stage}: {variant}" for stage, variant in stats["variants"].items())
        tiles = [
            ("p50 latency", f"{_figure(point['p50'], 2)} ms", False),
            ("p99 latency", f"{_figure(point['p99'], 2)} ms", over),
            ("throughput", f"{_figure(point['throughput'])}/s", False),
            ("queued", _figure(point["queue"], 0), False),
            ("per batch", _figure(point["per_batch"]), False),
            ("errors", f"{_figure(point['errors'])}/s", point["errors"] > 0),
            ("served", f"{stats['requests_total']:,}", False),
            ("variant", html.escape(variants), False),
        ]
        self.tiles.object = "<div class='wb-kpis'>" + "".join(
            f"<div class='wb-kpi{' bad' if bad else ''}'><div class='l'>{label}</div><div class='v'>{value}</div>"
            f"</div>" for label, value, bad in tiles) + "</div>"
