"""The Dask workers: serving or cordoned, resources, sessions loaded (with their providers), batches run."""

from __future__ import annotations

import html
import math
import time

import panel as pn

from workbench.ui.component import Component, card
from workbench.ui.feed import Sample

__all__ = ["WorkersTable", "table"]

TABLE_CSS = """
table.wb {border-collapse: collapse; width: 100%; font: 12px system-ui, sans-serif; color: #24292f}
table.wb th {text-align: left; font-weight: 600; color: #57606a; border-bottom: 1px solid #d0d7de; padding: 4px 6px}
table.wb td {border-bottom: 1px solid #eef1f4; padding: 4px 6px; vertical-align: top; overflow-wrap: break-word}
table.wb td.n {text-align: right; font-variant-numeric: tabular-nums}
.wb-note {font: 12px system-ui, sans-serif; color: #57606a; margin: 2px 0 6px}
.wb-note a {color: #1f6feb}
"""


def table(header: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    """An HTML table; cells are escaped by the caller (some hold markup)."""
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='{'n' if i in numeric else ''}'>{cell}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table class='wb'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class WorkersTable(Component):
    """One row per worker: serving or cordoned (since when, why), resources, threads, sessions loaded, batches
    in flight, batches run (and per second)."""

    route = "workers"

    def _build(self) -> pn.viewable.Viewable:
        self.summary = pn.pane.HTML("", stylesheets=[TABLE_CSS], sizing_mode="stretch_width", margin=0)
        self.body = pn.pane.HTML("", stylesheets=[TABLE_CSS], sizing_mode="stretch_width", margin=0)
        return card("Workers", self.summary, self.body)

    def update(self, sample: Sample, fresh: bool) -> None:
        cluster = sample.cluster
        link = cluster.get("dashboard_link")
        parts = [f"backend <b>{html.escape(str(cluster.get('kind', '?')))}</b>"]
        if cluster.get("scheduler"):
            parts.append(f"scheduler <code>{html.escape(str(cluster['scheduler']))}</code>")
        if link:
            parts.append(f"<a href='{html.escape(str(link))}' target='_blank' rel='noopener'>Dask dashboard</a>")
        self.summary.object = f"<div class='wb-note'>{' &middot; '.join(parts)}</div>"
        rows = []
        for worker in self.hub.feed.workers():
            rate = worker["batches_per_s"]
            cordoned = worker["cordoned"]
            state = "serving" if not cordoned else (
                f"<b style='color:#d62828'>cordoned</b> {time.strftime('%H:%M:%S', time.localtime(cordoned['since']))}"
                f"<br>{html.escape(str(cordoned['reason']))}")
            rows.append([
                html.escape(str(worker["name"])) + f"<br><code>{html.escape(worker['address'])}</code>", state,
                html.escape(worker["resources"]), str(worker["threads"]),
                "<br>".join(html.escape(s) for s in worker["sessions"]) or "<i>none</i>",
                str(worker["in_flight"]), str(worker["batches"]), "-" if math.isnan(rate) else f"{rate:.1f}",
            ])
        self.body.object = table(["worker", "state", "resources", "threads", "sessions loaded", "in flight",
                                  "batches", "batches/s"], rows, numeric={3, 5, 6, 7}) if rows else (
            "<div class='wb-note'>no worker yet</div>")
