"""Monitoring beside latency: drift against the reference, live quality per variant, business metrics and shifts.

Each panel reads the one statistics sample of its view (``stats["drift"]``,
``stats["quality"]``, ``stats["business"]``), never the engine: the scores are
computed by the engine when the feed takes its sample, off the request path.
The ``*_rows`` functions turn those reports into table rows, plain data tested
without Panel.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import panel as pn

from workbench.ui.component import Component, card
from workbench.ui.feed import Sample
from workbench.ui.workers import TABLE_CSS, table

__all__ = ["BusinessPanel", "DriftPanel", "QualityPanel", "business_rows", "drift_rows", "quality_rows"]

BADGE_CSS = TABLE_CSS + """
.wb-badge {display: inline-block; border-radius: 10px; padding: 0 8px; font: 600 11px system-ui, sans-serif;
           text-transform: uppercase; letter-spacing: .03em; background: #eef1f4; color: #57606a}
.wb-badge.ok {background: #e6f4ea; color: #1a7f37}
.wb-badge.warn {background: #fff4d6; color: #9a6700}
.wb-badge.alert, .wb-badge.shift {background: #ffe3e0; color: #b42318}
.wb-bar {display: inline-block; height: 8px; background: #457b9d; border-radius: 2px; vertical-align: middle}
.wb-bar.base {background: #bcd4e6}
"""


def badge(level: str) -> str:
    """A coloured label for a level: ok, warn, alert, shift, collecting, ..."""
    text = html.escape(level.replace("_", " "))
    return f"<span class='wb-badge {html.escape(level)}'>{text}</span>"


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def _share(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.1%}"


# -- rows ---------------------------------------------------------------------------------
def drift_rows(drift: Mapping[str, Any], limit: int = 6) -> list[dict[str, Any]]:
    """The worst input features by PSI, then each prediction output: ``{"feature", "source", "psi", "level", ...}``."""
    features = drift.get("features") or {}
    rows = []
    for worst in (drift.get("worst") or [])[:limit]:
        entry = features.get(worst["feature"]) or {}
        rows.append({"feature": worst["feature"], "source": "input", "psi": worst["psi"],
                     "level": entry.get("level", "ok"), "ks_pvalue": entry.get("ks_pvalue"),
                     "rows": entry.get("rows", 0)})
    for output, entry in (drift.get("prediction") or {}).items():
        rows.append({"feature": output, "source": "prediction", "psi": entry.get("psi"),
                     "level": entry.get("level", "ok"), "ks_pvalue": entry.get("ks_pvalue"),
                     "rows": entry.get("rows", 0)})
    return rows


def quality_rows(quality: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per variant: labelled rows, accuracy, macro precision and recall, ROC AUC."""
    rows = []
    for variant, scores in (quality.get("variants") or {}).items():
        classes = (scores.get("classes") or {}).values()
        precision = [c["precision"] for c in classes if c.get("precision") is not None]
        recall = [c["recall"] for c in classes if c.get("recall") is not None]
        rows.append({"variant": variant or "-", "count": int(scores.get("count") or 0),
                     "accuracy": scores.get("accuracy"), "auc": scores.get("auc"),
                     "precision": sum(precision) / len(precision) if precision else None,
                     "recall": sum(recall) / len(recall) if recall else None})
    return rows


def business_rows(business: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per variant, signal and value: count and share now, share in the baseline, z, and whether it shifted."""
    rows = []
    for variant, report in (business.get("variants") or {}).items():
        for signal, entry in (report.get("signals") or {}).items():
            rates, baseline = entry.get("rates") or {}, entry.get("baseline_rates") or {}
            tests = entry.get("tests") or {}
            for value in sorted(set(rates) | set(baseline) | set(tests)):
                rows.append({"variant": variant, "signal": signal, "value": value,
                             "count": (entry.get("counts") or {}).get(value, 0), "share": rates.get(value),
                             "baseline": baseline.get(value),
                             "z": (tests.get(value) or {}).get("z") if baseline else None,
                             "status": entry.get("status", "collecting"),
                             "shifted": value in (entry.get("shifted") or ())})
    return rows


# -- panels -------------------------------------------------------------------------------
class DriftPanel(Component):
    """The drift level of the pipeline shown, its worst input features by PSI, and the prediction drift."""

    route = "drift"

    def _build(self) -> pn.viewable.Viewable:
        self.status = pn.pane.HTML("", stylesheets=[BADGE_CSS], sizing_mode="stretch_width", margin=(0, 4))
        self.body = pn.pane.HTML("", stylesheets=[BADGE_CSS], sizing_mode="stretch_width", margin=0)
        return card("Drift", self.status, self.body, css_classes=["wb-drift"])

    def update(self, sample: Sample, fresh: bool) -> None:
        stats = sample.stats.get(self.state.pipeline or "") or {}
        drift = stats.get("drift") or {"level": "no_reference"}
        level = str(drift.get("level", "no_reference"))
        if level == "no_reference":
            self.status.object = _note("drift", f"{badge(level)} no reference data: give some with "
                                       "<code>set_reference</code> (or <code>deploy(..., reference=...)</code>)")
            self.body.object = ""
            return
        thresholds = drift.get("thresholds") or {}
        self.status.object = _note("drift", f"{badge(level)} {drift.get('live_rows', 0):,} live rows against "
                                   f"{drift.get('reference_rows', 0):,} reference rows; PSI warns at "
                                   f"{_fmt(thresholds.get('warn_psi'), 2)}, alerts at "
                                   f"{_fmt(thresholds.get('alert_psi'), 2)}")
        rows = [[html.escape(r["feature"]), r["source"], _fmt(r["psi"]), _fmt(r["ks_pvalue"]), badge(r["level"])]
                for r in drift_rows(drift)]
        self.body.object = _table("drift", ["feature", "", "PSI", "KS p", "level"], rows, {2, 3})


class QualityPanel(Component):
    """Live quality per variant from the labels posted: labelled rows, accuracy, precision, recall, ROC AUC."""

    route = "quality"

    def _build(self) -> pn.viewable.Viewable:
        self.status = pn.pane.HTML("", stylesheets=[BADGE_CSS], sizing_mode="stretch_width", margin=(0, 4))
        self.body = pn.pane.HTML("", stylesheets=[BADGE_CSS], sizing_mode="stretch_width", margin=0)
        return card("Live quality", self.status, self.body, css_classes=["wb-quality"])

    def update(self, sample: Sample, fresh: bool) -> None:
        stats = sample.stats.get(self.state.pipeline or "") or {}
        quality = stats.get("quality") or {}
        found = quality_rows(quality)
        if quality.get("log") == "off":
            note = "the prediction log is off, so labels have nothing to join (WORKBENCH_PREDICTION_LOG)"
        elif not found:
            note = "no labels yet: post them by request id to <code>/api/pipelines/&lt;name&gt;/feedback</code>"
        else:
            output, score = quality.get("output"), quality.get("score")
            note = f"labels compared with <b>{html.escape(str(output))}</b>" + (
                f"; AUC from <b>{html.escape(str(score))}</b>" if score else "")
        self.status.object = _note("quality", note)
        rows = [[html.escape(r["variant"]), f"{r['count']:,}", _fmt(r["accuracy"]), _fmt(r["precision"]),
                 _fmt(r["recall"]), _fmt(r["auc"])] for r in found]
        self.body.object = _table("quality", ["variant", "labelled", "accuracy", "precision", "recall", "AUC"], rows,
                                  {1, 2, 3, 4, 5})


class BusinessPanel(Component):
    """Shares of each business signal per variant, now against the baseline, with the shift flag."""

    route = "business"

    def _build(self) -> pn.viewable.Viewable:
        self.status = pn.pane.HTML("", stylesheets=[BADGE_CSS], sizing_mode="stretch_width", margin=(0, 4))
        self.body = pn.pane.HTML("", stylesheets=[BADGE_CSS], sizing_mode="stretch_width", margin=0)
        return card("Business metrics", self.status, self.body, css_classes=["wb-business"])

    def update(self, sample: Sample, fresh: bool) -> None:
        stats = sample.stats.get(self.state.pipeline or "") or {}
        business = stats.get("business")
        if not business:
            self.status.object = _note("business", "this pipeline declares no business signals (its "
                                       "<code>business:</code> entry)")
            self.body.object = ""
            return
        rule = business.get("rule") or {}
        statuses = {entry.get("status") for report in (business.get("variants") or {}).values()
                    for entry in (report.get("signals") or {}).values()}
        if business.get("shift"):
            flag = badge("shift") + " a share moved"
        elif statuses <= {"collecting"}:
            flag = badge("collecting") + " building a baseline"
        else:
            flag = badge("ok") + " no shift"
        self.status.object = _note("business", f"{flag}: the last {business.get('window_s', 0):g} s against the "
                                   f"{business.get('baseline_s', 0):g} s before (|z| &ge; {rule.get('z', '?')}, a "
                                   f"change of {_share(rule.get('min_change'))} or more, "
                                   f"{rule.get('min_count', '?')} rows each side)")
        rows = [[html.escape(r["variant"]), html.escape(r["signal"]), html.escape(r["value"]), f"{r['count']:,}",
                 f"{_bar(r['share'], '')} {_share(r['share'])}", f"{_bar(r['baseline'], ' base')} "
                 f"{_share(r['baseline'])}", _fmt(r["z"], 1),
                 badge("shift") if r["shifted"] else badge("collecting" if r["status"] == "collecting" else "ok")]
                for r in business_rows(business)]
        self.body.object = _table("business", ["variant", "signal", "value", "rows", "share now", "baseline", "z", ""],
                                  rows, {3, 6}) if rows else _note("business-table", "no request answered yet")


def _note(panel: str, text: str) -> str:
    return f"<div class='wb-note wb-{panel}-status'>{text}</div>"


def _table(panel: str, header: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    return f"<div class='wb-{panel}-table'>{table(header, rows, numeric)}</div>" if rows else ""


def _bar(share: Any, kind: str) -> str:
    width = 0 if not isinstance(share, int | float) else max(0, min(60, round(60 * share)))
    return f"<span class='wb-bar{kind}' style='width: {width}px'></span>"
