"""From statistics snapshots to what the charts and tables show: plain functions, no Panel.

Every function takes :meth:`~workbench.engine.Engine.stats` snapshots (or
:meth:`~workbench.engine.Engine.describe`) as plain data, so each one is
tested without a server or a browser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["TIME_COLUMNS", "columns", "histogram_rows", "stage_rows", "time_row", "worker_rows"]

#: The columns of one point of the time series (``time`` in ms since the epoch, for Bokeh's datetime axes).
TIME_COLUMNS = ("time", "p50", "p95", "p99", "target", "throughput", "errors", "rejections", "queue", "in_flight",
                "per_batch", "max_batch_size", "utilisation")

NAN = float("nan")


def time_row(current: Mapping[str, Any], at_s: float, previous: Mapping[str, Any] | None = None,
             previous_at_s: float | None = None) -> dict[str, float]:
    """One point of the time series from a snapshot taken at ``at_s`` (and the one before it, if any).

    Latency percentiles are those of ``current["recent"]`` when the snapshot has it (the
    last seconds only), else of the whole window. Rates (throughput, errors, rejections)
    and requests per batch come from the counters' growth since ``previous``, which is
    exact whatever the window; without a previous snapshot (or after the counters
    restarted, on a redeploy) they fall back to the snapshot's own rates.
    """
    recent = current.get("recent") or {}
    latency = recent.get("latency_ms") or current.get("latency_ms") or {}
    config = current.get("config") or {}
    # NOTE: the deployment's target rides along in its autoscaling view (and the tuner's, when one runs).
    target = (current.get("autoscaling") or {}).get("latency_target_ms")
    if target is None:
        target = (current.get("autotune") or {}).get("target_p99_ms")
    row = {
        "time": at_s * 1e3,
        "p50": _number(latency.get("p50")), "p95": _number(latency.get("p95")), "p99": _number(latency.get("p99")),
        "target": _number(target),
        "queue": float(current.get("queue_depth", 0)), "in_flight": float(current.get("in_flight", 0)),
        "max_batch_size": _number(config.get("max_batch_size")),
        "utilisation": _utilisation(current),
    }
    span = at_s - previous_at_s if previous_at_s is not None else 0.0
    grown = previous is not None and span > 0 and all(
        current.get(key, 0) >= previous.get(key, 0) for key in ("requests_total", "errors_total", "rejected_total",
                                                                 "batches_total"))
    if grown:
        assert previous is not None
        requests = current["requests_total"] - previous["requests_total"]
        batches = current.get("batches_total", 0) - previous.get("batches_total", 0)
        row["throughput"] = requests / span
        row["errors"] = (current.get("errors_total", 0) - previous.get("errors_total", 0)) / span
        row["rejections"] = (current.get("rejected_total", 0) - previous.get("rejected_total", 0)) / span
        row["per_batch"] = requests / batches if batches > 0 else NAN
    else:
        row["throughput"] = float(recent.get("throughput_rps", current.get("throughput_rps", 0.0)))
        row["errors"] = float(current.get("error_rate_rps", 0.0))
        row["rejections"] = float(current.get("rejection_rate_rps", 0.0))
        row["per_batch"] = _number((current.get("batch_size") or {}).get("mean"))
    return row


def _utilisation(snapshot: Mapping[str, Any]) -> float:
    """Percent of the deployment's worker threads that were running batches lately."""
    recent = snapshot.get("recent") or {}
    threads = sum(int(w.get("nthreads") or 1) for w in snapshot.get("workers") or ())
    seconds = recent.get("seconds")
    if not threads or not seconds or "busy_s" not in recent:
        return NAN
    return min(100.0, 100.0 * float(recent["busy_s"]) / (float(seconds) * threads))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else NAN


def stage_rows(snapshot: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Where a request's time goes, part by part in pipeline order: ``{"part", "p50", "p99"}`` in ms.

    The parts are the queue, batch formation, each stage and the transfer to and
    from the workers (the keys of ``timings_ms``); parts with no sample yet are left out.
    """
    parts: dict[str, list[Any]] = {"part": [], "p50": [], "p99": []}
    for key, figures in (snapshot.get("timings_ms") or {}).items():
        p50, p99 = _number(figures.get("p50")), _number(figures.get("p99"))
        if math.isnan(p50):
            continue
        parts["part"].append(key.replace("_", " "))
        parts["p50"].append(p50)
        parts["p99"].append(p99)
    return parts


def histogram_rows(snapshot: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The batch-size distribution of the window: ``{"size": [...], "batches": [...]}``, sizes as text."""
    histogram = (snapshot.get("batch_size") or {}).get("histogram") or {}
    ordered = sorted((int(size), int(count)) for size, count in histogram.items())
    return {"size": [str(size) for size, _ in ordered], "batches": [count for _, count in ordered]}


def worker_rows(cluster: Mapping[str, Any], stats: Mapping[str, Mapping[str, Any]],
                previous: Mapping[str, Mapping[str, Any]] | None = None, span_s: float = 0.0) -> list[dict[str, Any]]:
    """One row per worker: name, address, resources, threads, sessions loaded (with their providers),
    batches in flight, batches run (and per second since ``previous``, ``span_s`` earlier), and
    ``cordoned`` (since when and why; ``None`` while it serves, see :mod:`workbench.backend.hung`).

    ``cluster`` is :meth:`~workbench.engine.Engine.describe`; ``stats`` the snapshot of each deployment.
    """
    rows: dict[str, dict[str, Any]] = {}
    for address, info in (cluster.get("workers") or {}).items():
        rows[address] = _worker(address, info)
    ran_before = _ran(previous or {})
    for pipeline, snapshot in stats.items():
        for worker in snapshot.get("workers") or ():
            row = rows.setdefault(worker["address"], _worker(worker["address"], worker))
            providers = worker.get("providers") or {}
            row["sessions"].append(f"{pipeline}: " + (", ".join(f"{stage} on {_provider(p)}"
                                                                 for stage, p in providers.items()) or "loaded"))
            row["in_flight"] += int(worker.get("in_flight") or 0)
            row["batches"] += sum((worker.get("ran") or {}).values())
            if worker.get("cordoned"):
                row["cordoned"] = worker["cordoned"]
    ran_now = _ran(stats)
    for address, row in rows.items():
        grown = ran_now.get(address, 0) - ran_before.get(address, 0)
        row["batches_per_s"] = grown / span_s if previous is not None and span_s > 0 and grown >= 0 else NAN
    return sorted(rows.values(), key=lambda r: (str(r["name"]), r["address"]))


def _worker(address: str, info: Mapping[str, Any]) -> dict[str, Any]:
    resources = info.get("resources") or {}
    kind = ", ".join(f"{k}={v:g}" if isinstance(v, int | float) else f"{k}={v}" for k, v in sorted(resources.items()))
    name = info.get("name")
    return {"name": address if name is None else name, "address": address, "resources": kind or "CPU",
            "threads": int(info.get("nthreads") or 0), "sessions": [], "in_flight": 0, "batches": 0, "cordoned": None}


def _ran(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    ran: dict[str, int] = {}
    for snapshot in stats.values():
        for worker in snapshot.get("workers") or ():
            ran[worker["address"]] = ran.get(worker["address"], 0) + sum((worker.get("ran") or {}).values())
    return ran


def _provider(name: str) -> str:
    return str(name).removesuffix("ExecutionProvider")


def columns(rows: Sequence[Mapping[str, float]], names: Sequence[str] = TIME_COLUMNS) -> dict[str, Any]:
    """Rows as the columns of a Bokeh ``ColumnDataSource`` (what ``stream`` and ``data`` take)."""
    return {name: [row.get(name, NAN) for row in rows] for name in names}
