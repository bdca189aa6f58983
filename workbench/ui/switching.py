"""Model switching and shadow traffic of the pipeline shown: the policy, its candidates, its last decision and why.

Read-only: the policy is set through the control API (``PUT /api/pipelines/{name}/policy``)
or ``wb.set_policy``; every switch also appears in the activity log, with its reason.
"""

from __future__ import annotations

import html
from typing import Any

import panel as pn

from workbench.ui.component import Component, card
from workbench.ui.feed import Sample
from workbench.ui.workers import TABLE_CSS, table

__all__ = ["SwitchingPanel"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


class SwitchingPanel(Component):
    """The switching policy (candidates: quality, predicted and measured p99) and the shadow comparison."""

    route = "switching"

    def _build(self) -> pn.viewable.Viewable:
        self.body = pn.pane.HTML("", stylesheets=[TABLE_CSS], sizing_mode="stretch_width", margin=0)
        return card("Model switching", self.body)

    def update(self, sample: Sample, fresh: bool) -> None:
        stats = sample.stats.get(self.state.pipeline or "")
        if stats is None:
            self.body.object = "<div class='wb-note'>no pipeline deployed</div>"
            return
        parts = [self._switching(stats.get("switching"), stats["variants"])]
        shadow = stats.get("shadow")
        if shadow is not None:
            parts.append(self._shadow(shadow))
        self.body.object = "".join(parts)

    @staticmethod
    def _switching(view: dict[str, Any] | None, variants: dict[str, str]) -> str:
        if view is None:
            active = ", ".join(f"{stage}: {variant}" for stage, variant in variants.items())
            return (f"<div class='wb-note'>policy <b>fixed</b> &middot; {html.escape(active)} &middot; set "
                    "<code>best-quality-within-target</code> to switch variants with the load</div>")
        target = view.get("target_p99_ms")
        head = (f"<div class='wb-note'>policy <b>{html.escape(view['policy'])}</b> &middot; "
                f"{html.escape(view['stage'])}: <b>{html.escape(view['active'])}</b>"
                + (f" &middot; p99 target {target:g} ms" if target is not None else "") + "</div>")
        rows = [[html.escape(c["variant"]) + (" &#9679;" if c["variant"] == view["active"] else ""),
                 "-" if c["quality"] is None else f"{c['quality']:.3g} <i>({html.escape(c['quality_source'])})</i>",
                 "&infin;" if c["predicted_p99_ms"] is None else _ms(c["predicted_p99_ms"]),
                 _ms(c["measured_p99_ms"]), _ms(c["capacity_rps"])] for c in view["candidates"]]
        candidates = table(["variant", "quality", "predicted p99 ms", "measured p99 ms", "capacity rows/s"], rows,
                           numeric={2, 3, 4}) if rows else ""
        return head + candidates + f"<div class='wb-note'>{html.escape(view['reason'])}</div>"

    @staticmethod
    def _shadow(report: dict[str, Any]) -> str:
        latency, quality = report["latency_ms"], report["quality"]
        active = ", ".join(report["active_variants"]) or "active"
        head = (f"<div class='wb-note'>shadow <b>{html.escape(report['variant'])}</b> on "
                f"{report['fraction']:.0%} of the traffic &middot; {report['compared']:,} compared, "
                f"{report['dropped']:,} dropped, {report['failed']:,} failed &middot; agreement "
                f"<b>{_share(report['agreement']['rate'])}</b> of {report['agreement']['rows']:,} rows</div>")
        rows = [[html.escape(active), _ms(latency["active"]["p50"]), _ms(latency["active"]["p99"]),
                 _share(quality["active_accuracy"])],
                [html.escape(report["variant"]) + " (shadow)", _ms(latency["candidate"]["p50"]),
                 _ms(latency["candidate"]["p99"]), _share(quality["candidate_accuracy"])]]
        return head + table(["variant", "p50 ms", "p99 ms", f"accuracy ({quality['labelled_rows']} labelled)"], rows,
                            numeric={1, 2, 3})
