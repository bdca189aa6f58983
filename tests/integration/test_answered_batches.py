"""The serving process records answers once a batch: the prediction log, drift and observers, after a burst.

A burst of concurrent requests to the tabular demo (in-process, so that batches are many requests each): the log
holds every answered request under its own id with its own rows once the engine is closed, the observers fed per
batch counted every row, and drift saw every row.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson

from workbench.backend.inprocess import InProcessBackend
from workbench.demo.tabular import load_tabular_data
from workbench.engine import Engine
from workbench.monitor.predlog import PredictionLog
from workbench.pipeline import Pipeline

DATA = load_tabular_data()


async def test_a_burst_is_logged_whole_and_counted_once_a_batch(tmp_path: Path, tabular_pipeline: Pipeline) -> None:
    log = PredictionLog(tmp_path / "predictions.sqlite")
    engine = Engine(InProcessBackend(), prediction_log=log)
    await engine.deploy(tabular_pipeline, batching={"max_batch_size": 32, "max_delay_ms": 20})
    await engine.set_reference("tabular", {"features": DATA.x_train})
    rows = DATA.x_test
    # NOTE: one to three rows per request, so that a row filed under the wrong request cannot go unnoticed.
    requests = [(f"burst-{i}", rows[i % 100:i % 100 + 1 + i % 3]) for i in range(400)]
    answers = await asyncio.gather(*(engine.predict("tabular", {"features": x}, request_id=rid)
                                     for rid, x in requests))
    stats = engine.stats("tabular")
    await engine.close()  # NOTE: writes what is queued before it returns
    assert [a.request_id for a in answers] == [rid for rid, _ in requests]
    assert stats["batches_total"] < len(requests) / 4, "the burst was not batched"
    total_rows = sum(len(x) for _, x in requests)
    assert stats["business"]["variants"]["gbt"]["rows"] == total_rows
    assert stats["drift"]["live_rows"] == total_rows
    logged = {row["request_id"]: row for row in log.rows("tabular")}
    assert set(logged) == {rid for rid, _ in requests}
    for (rid, x), answer in zip(requests, answers, strict=True):
        kept = logged[rid]
        np.testing.assert_allclose(np.array(orjson.loads(kept["inputs"])["features"], dtype=np.float32), x)
        assert orjson.loads(kept["outputs"])["label"] == answer["label"].tolist()
        assert kept["variant"] == "gbt" and kept["latency_ms"] > 0
    assert log.stats()["queued"] == 0 and log.stats()["dropped"] == 0
