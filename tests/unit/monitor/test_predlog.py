"""The prediction log: never blocks the recorder, loses nothing on close, survives a reopen, keeps its bounds."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from workbench.batching.batch import AnsweredBatch, merge, split
from workbench.monitor.feedback import FeedbackLoop
from workbench.monitor.predlog import PredictionLog, parse_location
from workbench.pipeline import Prediction


def _record(log: PredictionLog, i: int, pipeline: str = "tabular", label: str = "a") -> bool:
    return log.record(f"id-{i}", pipeline, {"model": "v1" if i % 2 else "v2"},
                      {"features": np.full((1, 3), i, np.float32)},
                      {"label": np.array([label]), "probabilities": np.array([[0.25, 0.75]])}, 1.5)


async def test_many_records_from_the_loop_are_all_taken_then_close_writes_them_all(tmp_path: Path) -> None:
    # NOTE: what a record costs the loop is measured in benchmarks/bench_claims.py.
    log = PredictionLog(tmp_path / "p.sqlite")
    for i in range(5000):
        assert _record(log, i)
        if i % 500 == 0:
            await asyncio.sleep(0)
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


def _answered(requests: list[dict[str, np.ndarray]], ids: list[str]) -> AnsweredBatch:
    """A batch as the batcher answers it: merged inputs and outputs, each request's own slice of them."""
    inputs = merge(requests, {"tokens": -1})
    rows = [next(iter(r.values())).shape[0] for r in requests]
    total = sum(rows)
    outputs = {"label": np.array([f"class-{i}" for i in range(total)], dtype=object),
               "score": np.arange(total, dtype=np.float32) / 10,
               "embedding": np.ones((total, 64), np.float32)}
    answers = [Prediction(own, {"total": 2.0 + i}, request_id=ids[i]) for i, own in enumerate(split(outputs, rows))]
    return AnsweredBatch(inputs, outputs, requests, answers, {"model": "v3"}, 1.0)


def test_an_answered_batch_is_one_row_per_request_with_its_own_inputs_and_outputs(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.sqlite", output_max_values=32)
    stacked = [{"features": np.full((n, 2), i, np.float32), "text": np.array([f"t{i}"] * n, dtype=object)}
               for i, n in enumerate((1, 2, 1))]
    padded = [{"tokens": np.arange(n, dtype=np.int64)[None, :]} for n in (2, 4)]
    assert log.record_batch("tabular", {"model": "v3"}, _answered(stacked, ["a", "b", "c"]))
    assert log.record_batch("text", {"model": "v3"}, _answered(padded, ["d", "e"]))
    # NOTE: the same request recorded alone: its digest is the one it had inside the batch
    log.record("b-alone", "tabular", {"model": "v3"}, stacked[1], {"label": np.array(["x", "y"])}, 1.0)
    log.close()
    rows = {r["request_id"]: r for r in log.rows()}
    assert log.stats()["written"] == 6 and log.stats()["failed"] == 0
    assert orjson.loads(rows["b"]["inputs"]) == {"features": [[1.0, 1.0], [1.0, 1.0]], "text": ["t1", "t1"]}
    assert orjson.loads(rows["b"]["outputs"]) == {"label": ["class-1", "class-2"], "score": [0.1, 0.2],
                                                  "embedding": {"dtype": "<f4", "shape": [2, 64]}}
    assert orjson.loads(rows["c"]["outputs"])["label"] == ["class-3"] and rows["c"]["latency_ms"] == 4.0
    assert rows["b"]["input_digest"] == rows["b-alone"]["input_digest"] != rows["a"]["input_digest"]
    # NOTE: padded to 4 tokens in the batch, each request keeps its own unpadded tensor
    assert orjson.loads(rows["d"]["inputs"]) == {"tokens": [[0, 1]]}
    assert orjson.loads(rows["e"]["inputs"]) == {"tokens": [[0, 1, 2, 3]]}
    assert {r["variant"] for r in rows.values()} == {"v3"}


def test_one_request_batches_in_a_row_are_framed_together_and_keep_their_own_rows_and_times(
        tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.sqlite", output_max_values=32, linger_s=0.5)
    recorded = []
    for i in range(30):
        # NOTE: one and two rows alike; every tenth a different layout, which starts a new item
        n = 1 + i % 2
        features = np.full((n, 3 if i % 10 else 2), i, np.float32)
        assert log.record_batch("tabular", {"model": "v3"}, _answered([{"features": features}], [f"r{i}"]))
        recorded.append(time.time())
        time.sleep(0.002)
    log.close()
    rows = {r["request_id"]: r for r in log.rows()}
    assert log.stats()["written"] == 30 and log.stats()["failed"] == 0
    for i in range(30):
        n = 1 + i % 2
        row = rows[f"r{i}"]
        assert orjson.loads(row["inputs"]) == {"features": [[float(i)] * (3 if i % 10 else 2)] * n}
        assert orjson.loads(row["outputs"])["label"] == [f"class-{k}" for k in range(n)]
        earliest = recorded[i - 1] if i else 0.0
        assert earliest < row["time"] <= recorded[i], "each request keeps its own time"


def test_a_writer_that_dies_is_started_again_and_what_it_held_counts_as_failed(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.sqlite", linger_s=0.01)
    for i in range(5):
        _record(log, i)
    assert log.flush(30)
    first = log.stats()["writer_pid"]
    assert first != os.getpid()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    for i in range(5, 40):
        _record(log, i)
        time.sleep(0.02)
    assert log.flush(30), "a flush after the writer died still returns"
    while log.stats()["written"] + log.stats()["failed"] < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    stats = log.stats()
    assert stats["restarts"] == 1 and stats["writer_pid"] != first
    assert stats["written"] + stats["failed"] == 40 and stats["written"] >= 5 + 30, stats
    assert log.count() == stats["written"]
