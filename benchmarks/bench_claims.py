"""Speed claims the workbench relies on, measured as ratios in one run (the tests assert behaviour only).

- ``predlog``: what one prediction-log record costs the event loop that serves
  requests, against the lightest request's own work (the tabular pipeline's
  ``predict`` of one row, in-process). The writer thread does the rest; the
  record is meant to stay a small share of the request.
- ``int8``: the text pipeline's int8 encoder against fp32, as the switching
  policy calibrates them (rows per second at batch 8, each variant's batches run
  alone). The surge test of ``tests/integration/test_switching.py`` needs them
  apart (it skips where they are not, as on a GPU).

Run: ``python benchmarks/bench_claims.py [--records N] [--runs R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from workbench.demo import build_demo_models, demo_pipeline
from workbench.engine import Engine
from workbench.monitor.predlog import PredictionLog
from workbench.switching import Load, SwitchingController
from workbench.switching.policy import predict


def _arguments(i: int) -> tuple[object, ...]:
    return (f"id-{i}", "tabular", {"model": "gbt"}, {"features": np.full((1, 30), i, np.float32)},
            {"label": np.array(["benign"]), "probabilities": np.array([[0.25, 0.75]])}, 1.5)


def predlog(records: int) -> None:
    """µs per record on the caller's thread against µs per one-row tabular ``predict`` (best of three rounds)."""
    arguments = [_arguments(i) for i in range(records)]
    pipeline = demo_pipeline("tabular")
    rows = [{"features": np.full((1, 30), i / records, np.float32)} for i in range(min(records, 2000))]
    best = {"log": float("inf"), "predict": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(3):
            log = PredictionLog(Path(tmp) / f"p{round_}.sqlite", max_queue=records + 1)
            began = time.perf_counter()
            for args in arguments:
                log.record(*args)  # type: ignore[arg-type]
            best["log"] = min(best["log"], (time.perf_counter() - began) / records * 1e6)
            log.close()
            began = time.perf_counter()
            for row in rows:
                pipeline.predict(row)
            best["predict"] = min(best["predict"], (time.perf_counter() - began) / len(rows) * 1e6)
    print(f"predlog   {records} records: {best['log']:.2f} µs a record, a one-row tabular predict "
          f"{best['predict']:.0f} µs; ratio {best['log'] / best['predict']:.3f}")


async def int8(runs: int) -> None:
    """The calibrated capacity of the text pipeline's int8 and fp32 variants at batch 8."""
    engine = Engine.inprocess()
    try:
        await engine.deploy("text", batching={"max_batch_size": 8})
        await engine.set_policy("text", "best-quality-within-target", target_p99_ms=1e6,
                                candidates=["fp32", "int8"])
        controller = engine.deployment("text").observers["switching"]
        assert isinstance(controller, SwitchingController)
        await controller.calibrate(runs=runs, only_missing=False)
        capacity = {v: predict(controller.profiles[v], Load(0.0, 8)).capacity_rps for v in ("fp32", "int8")}
    finally:
        await engine.close()
    print(f"int8      text at batch 8 ({runs} runs): fp32 {capacity['fp32']:.0f} rows/s, int8 "
          f"{capacity['int8']:.0f} rows/s; ratio {capacity['int8'] / capacity['fp32']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="prediction-log records per round")
    parser.add_argument("--runs", type=int, default=10, help="calibration batches per variant and batch size")
    args = parser.parse_args()
    build_demo_models(log=lambda _: None)
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus")
    predlog(args.records)
    asyncio.run(int8(args.runs))
