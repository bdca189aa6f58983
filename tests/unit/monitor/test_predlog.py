"""The prediction log: never blocks the recorder, loses nothing on close, survives a reopen, keeps its bounds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from workbench.monitor.feedback import FeedbackLoop
from workbench.monitor.predlog import PredictionLog, parse_location


def _record(log: PredictionLog, i: int, pipeline: str = "tabular", label: str = "a") -> bool:
    return log.record(f"id-{i}", pipeline, {"model": "v1" if i % 2 else "v2"},
                      {"features": np.full((1, 3), i, np.float32)},
                      {"label": np.array([label]), "probabilities": np.array([[0.25, 0.75]])}, 1.5)


async def test_many_records_from_the_loop_without_blocking_then_close_writes_them_all(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.sqlite")
    began = time.perf_counter()
    for i in range(5000):
        assert _record(log, i)
        if i % 500 == 0:
            await asyncio.sleep(0)
    per_record_us = (time.perf_counter() - began) / 5000 * 1e6
    # NOTE: generous on a shared CI core; measured at a few µs a record
    assert per_record_us < 200, f"{per_record_us:.1f} µs a record"
    await asyncio.to_thread(log.close)
    stats = log.stats()
    assert stats["written"] == 5000 and stats["dropped"] == 0 and stats["failed"] == 0
    assert log.count() == 5000


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.sqlite", max_queue=1)
    results = [_record(log, i) for i in range(2000)]
    log.close()
    stats = log.stats()
    assert stats["dropped"] == results.count(False)
    assert stats["written"] == results.count(True) == log.count()
    assert not _record(log, 1), "a closed log takes nothing"


def test_reopen_reads_back_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    log = PredictionLog(path)
    for i in range(10):
        _record(log, i)
    log.close()
    again = PredictionLog(path)
    rows = again.rows("tabular")
    again.close()
    assert [r["request_id"] for r in rows] == [f"id-{i}" for i in range(10)]
    first = rows[3]
    assert first["variant"] == "v1" and orjson.loads(first["variants"]) == {"model": "v1"}
    assert orjson.loads(first["inputs"]) == {"features": [[3.0, 3.0, 3.0]]}
    assert orjson.loads(first["outputs"]) == {"label": ["a"], "probabilities": [[0.25, 0.75]]}
    assert first["latency_ms"] == 1.5 and len(first["input_digest"]) == 32
    assert rows[3]["input_digest"] != rows[4]["input_digest"]


def test_large_inputs_and_outputs_keep_a_digest_and_a_shape(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.sqlite", inputs_max_bytes=64, output_max_values=10)
    log.record("big", "text", {}, {"text": np.array(["word " * 100], dtype=object)},
               {"embedding": np.zeros((1, 384), np.float32)}, None)
    log.close()
    row = log.rows()[0]
    assert row["inputs"] is None and row["input_digest"]
    assert orjson.loads(row["outputs"]) == {"embedding": {"dtype": "<f4", "shape": [1, 384]}}


def test_retention_bounds_the_rows_by_count_and_age(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    log = PredictionLog(path, max_rows=25)
    for i in range(100):
        _record(log, i)
    log.close()
    # NOTE: applied on the writer's last pass before it stops, and again when the file is opened
    assert log.count() == 25
    assert log.rows()[0]["request_id"] == "id-75"
    aged = PredictionLog(path, max_age_s=1e-3, retention_interval_s=0.05)
    time.sleep(0.2)
    aged.close()
    assert aged.count() == 0


def test_parquet_export_round_trip_with_labels(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.sqlite")
    for i in range(6):
        _record(log, i, label="a" if i < 3 else "b")
    _record(log, 99, pipeline="other")
    loop = FeedbackLoop(log)
    answer = loop.add("tabular", {"id-0": "a", "id-1": "b", "id-4": "b", "nope": "a"})
    assert answer["accepted"] == 3 and answer["unknown"] == ["nope"]
    count = log.export_parquet(tmp_path / "out" / "p.parquet", pipeline="tabular")
    log.close()
    table = pq.read_table(tmp_path / "out" / "p.parquet").to_pylist()
    assert count == len(table) == 6
    assert [r["request_id"] for r in table] == [f"id-{i}" for i in range(6)]
    assert {r["request_id"]: r["label"] for r in table if r["label"]} == {"id-0": '"a"', "id-1": '"b"', "id-4": '"b"'}
    assert orjson.loads(table[2]["inputs"]) == {"features": [[2.0, 2.0, 2.0]]}


def test_quality_per_variant_and_a_relabel_replaces_the_first(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    log = PredictionLog(path)
    for i in range(4):
        _record(log, i, label="a")  # ids 1 and 3 from v1, 0 and 2 from v2
    loop = FeedbackLoop(log)
    loop.add("tabular", [{"id": "id-0", "label": "a"}, {"id": "id-1", "label": "b"}, {"id": "id-3", "label": "a"}])
    loop.add("tabular", [("id-1", "a")])  # NOTE: corrected: v1 is now right twice
    quality = loop.quality("tabular")
    assert quality["output"] == "label"
    assert quality["variants"]["v1"]["accuracy"] == 1.0 and quality["variants"]["v1"]["count"] == 2
    assert quality["variants"]["v2"]["count"] == 1
    log.close()
    reopened = PredictionLog(path)
    assert FeedbackLoop(reopened).quality("tabular") == quality, "the tallies are rebuilt from the log"
    reopened.close()


def test_locations() -> None:
    home = Path("/h")
    assert parse_location(None, home) == home / "predictions.sqlite"
    assert parse_location("", home) is None and parse_location("off", home) is None
    assert parse_location("sqlite:////data/p.sqlite", home) == Path("/data/p.sqlite")
    assert parse_location("/x/y.db", home) == Path("/x/y.db")
    with pytest.raises(ValueError, match="sqlite:///"):
        parse_location("sqlite://:memory:", home)
