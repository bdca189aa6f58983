"""Offline batch throughput on 1 and 2 Dask workers, and as a ratio of raw ``InferenceSession.run`` (same run).

The data is the text demo's held-out sentences, repeated and shuffled, in
Parquet files of ``batch`` rows each (one pipeline call per partition). The
offline figure is ``Workbench.batch`` from the files to a Parquet folder: read,
tokenise, encode, classify, label, write. The raw figure is the encoder model's
own session on the same batches, tokenised beforehand, in this process with
ONNX Runtime's default threads (every core); "raw, 1 thread" is the same with
one thread, so raw's own scaling shows what the cores allow. Every cluster is started and warm
(the pipeline is deployed first) before timing; then each round times every
path once, one after the other, so slow spells on a shared machine hit every
path; each path keeps its best round (noise only ever slows a run down), and
the ratios are between those bests.

``workers x threads`` is Dask workers times ONNX Runtime threads per worker
(``WORKBENCH_INTRA_OP_THREADS``): one thread per worker measures how the batch
scales with workers; a LocalCluster's default shares the cores out among its workers.

Run: ``python benchmarks/bench_offline.py [--rows N] [--runs R] [--tabular]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

from workbench.api import Workbench
from workbench.demo import build_demo_models, demo_pipeline
from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import load_tabular_data
from workbench.models.session import SessionConfig, create_session
from workbench.pipeline import OnnxStage, Pipeline

#: (workers, ONNX Runtime threads per worker); the first is the baseline of the scaling column.
CONFIGS = [(1, 1), (2, 1), (1, 0)]


def _write(frame: pd.DataFrame, folder: Path, rows_per_file: int) -> Path:
    folder.mkdir(parents=True)
    for i, start in enumerate(range(0, len(frame), rows_per_file)):
        frame.iloc[start:start + rows_per_file].reset_index(drop=True).to_parquet(folder / f"part-{i:04d}.parquet")
    return folder


def _raw_call(pipeline: Pipeline, stage_name: str, batches: list[dict[str, np.ndarray]],
              threads: int | None = None) -> Callable[[], float]:
    """Rows/s of one pass of the stage's own session over the batches, prepared beforehand.

    ``threads`` makes a session of its own with that many ONNX Runtime threads.
    """
    stage = pipeline.stage(stage_name)
    assert isinstance(stage, OnnxStage) and stage.loaded is not None and pipeline.repository is not None
    session, signature = stage.loaded.session, stage.loaded.signature
    if threads is not None:
        path = pipeline.repository.path(stage.model, stage.variant)
        session = create_session(path, SessionConfig(intra_op_threads=threads), stage.resource)[0]
    names = [spec.name for spec in signature.outputs]
    feeds = []
    for batch in batches:
        prepared = pipeline.predict(batch, outputs=list(stage.inputs)).outputs
        feeds.append({spec.name: prepared[n] for spec, n in zip(signature.inputs, stage.inputs)})
    rows = sum(len(next(iter(b.values()))) for b in batches)
    session.run(names, feeds[0])  # warm

    def run() -> float:
        began = time.perf_counter()
        for feed in feeds:
            session.run(names, feed)
        return rows / (time.perf_counter() - began)

    return run


def _offline_call(wb: Workbench, demo: str, folder: Path, out: Path, batch: int) -> Callable[[], float]:
    """Rows/s of one offline batch from the files to a Parquet folder (the pipeline deployed, so warm)."""
    wb.deploy(demo)
    wb.batch(demo, sorted(folder.glob("*.parquet"))[:4], out, batch_size=batch, overwrite=True, progress=False)
    return lambda: wb.batch(demo, folder, out, batch_size=batch, overwrite=True, progress=False).rows_per_s


def _case(name: str, demo: str, stage: str, frame: pd.DataFrame, column: str, batch: int, runs: int,
          root: Path) -> None:
    pipeline = demo_pipeline(demo)
    folder = _write(frame, root / name, batch)
    values = frame[column].to_numpy(dtype=object) if column == "text" else frame.to_numpy(dtype=np.float32)
    batches = [{column: values[i:i + batch]} for i in range(0, len(frame), batch)]
    calls: dict[str, Callable[[], float]] = {
        "raw": _raw_call(pipeline, stage, batches),
        "raw, 1 thread": _raw_call(pipeline, stage, batches, threads=1),
    }
    with contextlib.ExitStack() as stack:
        for workers, threads in CONFIGS:
            env = {"WORKBENCH_INTRA_OP_THREADS": str(threads)} if threads else {}
            wb = stack.enter_context(Workbench.local(workers=workers, threads_per_worker=1, env=env))
            shared = max(1, (os.cpu_count() or 1) // workers)
            label = f"{workers} x {threads}" if threads else f"{workers} x {shared} (default)"
            calls[label] = _offline_call(wb, demo, folder, root / f"{name}-out", batch)
        # NOTE: one pass of every path per round, so a slow spell on a shared machine is not one path's alone.
        rounds = [{label: call() for label, call in calls.items()} for _ in range(runs)]
    first = next(label for label in calls if not label.startswith("raw"))
    print(f"\n{name}: {len(frame)} rows in {len(batches)} Parquet files, batch {batch}; raw = the {stage!r} "
          f"session alone on the same batches, prepared; {runs} rounds")
    best = {label: max(r[label] for r in rounds) for label in calls}
    print(f"{'path':<18} {'best rows/s':>11} {'vs raw':>7} {'vs ' + first:>9}   each round")
    for label, rate in best.items():
        each = " ".join(f"{r[label]:.0f}" for r in rounds)
        print(f"{label:<18} {rate:>11.0f} {rate / best['raw']:>7.3f} {rate / best[first]:>9.2f}   {each}")
    print(f"raw's own 1 -> {os.cpu_count()} threads: {best['raw'] / best['raw, 1 thread']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048, help="text rows (sentences)")
    parser.add_argument("--batch", type=int, default=256, help="rows per pipeline call and per file")
    parser.add_argument("--runs", type=int, default=3, help="rounds; each times every path once")
    parser.add_argument("--tabular", action="store_true", help="also the tabular pipeline (overhead-bound)")
    parser.add_argument("--tabular-rows", type=int, default=200_000)
    args = parser.parse_args()

    build_demo_models(log=lambda _: None)
    rng = np.random.default_rng(0)
    sentences, _ = topic_sentences("test")
    text = pd.DataFrame({"text": rng.choice(np.array(sentences, dtype=object), size=args.rows)})
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}, "
          f"providers {demo_pipeline('text').stage('encoder').provider}")
    print("# offline rows/s cover reading the files, every stage and writing the Parquet output")
    with tempfile.TemporaryDirectory() as tmp:
        _case("text", "text", "encoder", text, "text", args.batch, args.runs, Path(tmp))
        if args.tabular:
            x = load_tabular_data().x_test
            rows = pd.DataFrame(x[rng.integers(0, len(x), size=args.tabular_rows)],
                                columns=[f"f{i}" for i in range(x.shape[1])])
            _case("tabular", "tabular", "model", rows, "features", max(args.batch, args.tabular_rows // 16),
                  args.runs, Path(tmp))


if __name__ == "__main__":
    main()
