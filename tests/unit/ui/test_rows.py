"""Statistics snapshots turned into chart points, bars and table rows (no Panel, no engine)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from workbench.ui.activity import activity_rows
from workbench.ui.rows import TIME_COLUMNS, columns, histogram_rows, stage_rows, time_row, worker_rows
from workbench.ui.traffic import describe_run


def snapshot(requests: int = 0, errors: int = 0, rejected: int = 0, batches: int = 0, **extra: Any) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "requests_total": requests, "errors_total": errors, "rejected_total": rejected, "batches_total": batches,
        "throughput_rps": 7.0, "error_rate_rps": 0.5, "rejection_rate_rps": 0.25, "queue_depth": 3, "in_flight": 1,
        "latency_ms": {"p50": 10.0, "p95": 20.0, "p99": 30.0},
        "batch_size": {"mean": 4.0, "histogram": {8: 2, 1: 5, 16: 1}},
        "config": {"max_batch_size": 32, "max_delay_ms": 5.0, "mode": "dynamic", "max_in_flight": 2},
        "autoscaling": {"enabled": False, "decisions": [], "latency_target_ms": 25.0},
        "workers": [{"address": "tcp://a", "nthreads": 2, "resources": {},
                     "providers": {"model": "CPUExecutionProvider"}, "in_flight": 1, "ran": {"pipeline": 10}}],
    }
    stats.update(extra)
    return stats


def test_a_point_takes_rates_from_the_counters_growth_and_latency_from_the_recent_window() -> None:
    before = snapshot(requests=100, errors=1, rejected=0, batches=20)
    now = snapshot(requests=300, errors=5, rejected=2, batches=40,
                   recent={"seconds": 2.0, "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0}, "busy_s": 1.0,
                           "throughput_rps": 99.0})
    row = time_row(now, at_s=12.0, previous=before, previous_at_s=10.0)
    assert set(row) == set(TIME_COLUMNS)
    assert row["time"] == 12_000.0
    assert (row["p50"], row["p95"], row["p99"]) == (1.0, 2.0, 3.0)
    assert row["throughput"] == 100.0 and row["errors"] == 2.0 and row["rejections"] == 1.0
    assert row["per_batch"] == 10.0
    assert row["target"] == 25.0 and row["max_batch_size"] == 32.0
    assert (row["queue"], row["in_flight"]) == (3.0, 1.0)
    assert row["utilisation"] == 25.0  # 1 s busy of 2 s on 2 threads


def test_a_first_point_or_a_restarted_deployment_falls_back_on_the_snapshot_rates() -> None:
    first = time_row(snapshot(requests=10), at_s=1.0)
    assert first["throughput"] == 7.0 and first["errors"] == 0.5 and first["rejections"] == 0.25
    assert first["per_batch"] == 4.0
    assert (first["p50"], first["p99"]) == (10.0, 30.0)
    assert math.isnan(first["utilisation"])
    restarted = time_row(snapshot(requests=5), at_s=2.0, previous=snapshot(requests=500), previous_at_s=1.0)
    assert restarted["throughput"] == 7.0


def test_missing_figures_are_nan_not_errors() -> None:
    row = time_row({"latency_ms": {"p50": float("nan")}, "autoscaling": {"latency_target_ms": None}}, at_s=0.0)
    assert math.isnan(row["p50"]) and math.isnan(row["target"]) and math.isnan(row["max_batch_size"])
    no_batch = time_row(snapshot(requests=10, batches=3), at_s=2.0, previous=snapshot(requests=10, batches=3),
                        previous_at_s=1.0)
    assert no_batch["throughput"] == 0.0 and math.isnan(no_batch["per_batch"])


def test_stage_rows_keep_the_pipeline_order_and_skip_parts_without_samples() -> None:
    stats = {"timings_ms": {"queue": {"p50": 1.0, "p99": 2.0}, "batch_formation": {"p50": 0.5, "p99": 0.6},
                            "model": {"p50": float("nan"), "p99": float("nan")}, "transfer": {"p50": 3.0, "p99": 4.0}}}
    assert stage_rows(stats) == {"part": ["queue", "batch formation", "transfer"], "p50": [1.0, 0.5, 3.0],
                                 "p99": [2.0, 0.6, 4.0]}
    assert stage_rows({}) == {"part": [], "p50": [], "p99": []}


def test_histogram_rows_are_sorted_by_size() -> None:
    assert histogram_rows(snapshot()) == {"size": ["1", "8", "16"], "batches": [5, 2, 1]}
    assert histogram_rows({}) == {"size": [], "batches": []}


def test_worker_rows_merge_the_cluster_with_the_sessions_each_deployment_holds() -> None:
    cluster = {"workers": {"tcp://a": {"name": 0, "nthreads": 2, "resources": {}},
                           "tcp://b": {"name": 1, "nthreads": 1, "resources": {"GPU": 1}}}}
    silent = {"since": 1.0, "reason": "no answer to a batch of 'text' within 2.00 s"}
    text = {"workers": [{"address": "tcp://a", "nthreads": 2, "providers": {"encoder": "CUDAExecutionProvider"},
                         "in_flight": 2, "ran": {"pipeline": 5}, "cordoned": silent}]}
    before = {"tabular": snapshot(), "text": {"workers": [{"address": "tcp://a", "ran": {"pipeline": 1}}]}}
    rows = worker_rows(cluster, {"tabular": snapshot(), "text": text}, before, span_s=2.0)
    assert [r["address"] for r in rows] == ["tcp://a", "tcp://b"]
    a, b = rows
    assert a["resources"] == "CPU" and b["resources"] == "GPU=1"
    assert a["sessions"] == ["tabular: model on CPU", "text: encoder on CUDA"]
    assert a["in_flight"] == 3 and a["batches"] == 15 and a["batches_per_s"] == 2.0
    assert b["sessions"] == [] and b["batches"] == 0 and b["batches_per_s"] == 0.0
    assert a["cordoned"] == silent and b["cordoned"] is None
    assert math.isnan(worker_rows(cluster, {"text": text})[0]["batches_per_s"])


def test_columns_fill_what_a_row_lacks_with_nan() -> None:
    data = columns([{"time": 1.0, "p50": 2.0}], ("time", "p50", "p99"))
    assert data["time"] == [1.0] and data["p50"] == [2.0] and math.isnan(data["p99"][0])
    assert columns([]) == {name: [] for name in TIME_COLUMNS}


def test_activity_merges_scaling_decisions_and_events_newest_first() -> None:
    scaling = {"decisions": [{"time": 2.0, "action": "up", "from": 1, "to": 2, "reason": "queue 40 > 8"}]}
    events = [{"time": 1.0, "event": "deployed", "variants": {"model": "gbt"}},
              {"time": 3.0, "event": "batching", "max_batch_size": 8}]
    rows = activity_rows(scaling, events)
    assert [(r["source"], r["what"]) for r in rows] == [("pipeline", "batching"), ("scaling", "up"),
                                                        ("pipeline", "deployed")]
    assert rows[0]["details"] == "max_batch_size=8"
    assert rows[1]["details"] == "1 → 2 workers: queue 40 > 8"
    assert rows[2]["details"] == "variants={model: gbt}"
    assert len(activity_rows(scaling, events * 10, limit=5)) == 5


@pytest.mark.parametrize(("run", "expected"), [
    (None, "no traffic from the lab"),
    ({"running": True, "pattern": "surge", "rate_rps": 50.0, "seconds": 3.0, "sent": 1500, "ok": 1490, "failed": 10,
      "errors": {"Overloaded": 10}},
     "sending: surge at 50 requests/s for 3 s; sent 1,500, answered 1,490, failed 10 (Overloaded 10)"),
])
def test_a_traffic_run_in_one_line(run: dict[str, Any] | None, expected: str) -> None:
    assert describe_run(run) == expected
