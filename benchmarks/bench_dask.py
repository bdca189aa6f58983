"""The Dask backend against in-process runs, measured in one run.

Three figures:

1. **Dispatch overhead**: end-to-end latency of one-row tabular requests sent one
   at a time through a LocalCluster, minus the same through the in-process
   backend (same engine, batcher and pipeline; calls interleaved). Goal ≤ 2 ms p50.
2. **Saturated throughput** of the text pipeline through the batcher on a
   LocalCluster, as a ratio of raw ``InferenceSession.run`` of the encoder at its
   best batch size on the same cores (inputs tokenised beforehand). Goal ≥ 0.9.
3. **Knob change**: time from ``set_batching(max_batch_size=...)`` to the first
   batch formed with the new size, under steady load.

Requests are driven from the engine's own event loop, as the REST front does.
Run: ``python benchmarks/bench_dask.py [--seconds S] [--workers N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnxruntime as ort

from workbench.api import Workbench
from workbench.demo import build_demo_models, demo_pipeline
from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import load_tabular_data
from workbench.engine import Engine
from workbench.pipeline import OnnxStage


def _percentiles(samples_ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples_ms, 50)), float(np.percentile(samples_ms, 99))


def dispatch_overhead(local: Workbench, inproc: Workbench, seconds: float) -> None:
    rows = load_tabular_data().x_test
    requests = [{"features": rows[i:i + 1]} for i in range(len(rows))]

    async def one(engine: Engine, request: dict[str, Any]) -> float:
        began = time.perf_counter()
        await engine.predict("tabular", request)
        return (time.perf_counter() - began) * 1e3

    async def many(engine: Engine, count: int, offset: int) -> list[float]:
        return [await one(engine, requests[(offset + i) % len(requests)]) for i in range(count)]

    latencies: dict[str, list[float]] = {"local": [], "inproc": []}
    deadline = time.monotonic() + 2 * seconds
    offset = 0
    for wb in (local, inproc):
        wb._portal.call(lambda w=wb: many(w.engine, 50, 0))  # warm both paths
    while time.monotonic() < deadline:
        for key, wb in (("local", local), ("inproc", inproc)):
            latencies[key] += wb._portal.call(lambda w=wb, o=offset: many(w.engine, 50, o))
        offset += 50
    local_p50, local_p99 = _percentiles(latencies["local"])
    inproc_p50, inproc_p99 = _percentiles(latencies["inproc"])
    print(f"\n1. dispatch overhead, tabular, batch 1, {len(latencies['local'])} requests per path")
    print(f"   in-process  p50 {inproc_p50:6.3f} ms  p99 {inproc_p99:6.3f} ms")
    print(f"   LocalCluster p50 {local_p50:6.3f} ms  p99 {local_p99:6.3f} ms")
    print(f"   overhead    p50 {local_p50 - inproc_p50:6.3f} ms  p99 {local_p99 - inproc_p99:6.3f} ms"
          "  (goal p50 <= 2 ms)")


def _raw_encoder(sentences: np.ndarray, batch: int, threads: int | None = None) -> Callable[[], None]:
    """Raw session.run of the fp32 encoder on tokenised batches, in its own session."""
    pipeline = demo_pipeline("text")
    encoder = pipeline.stage("encoder")
    assert isinstance(encoder, OnnxStage) and encoder.loaded is not None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(encoder.loaded.path), options, providers=["CPUExecutionProvider"])
    feeds = []
    for start in range(0, len(sentences) - batch + 1, batch):
        prepared = pipeline.predict({"text": sentences[start:start + batch]}, outputs=list(encoder.inputs)).outputs
        names = [spec.name for spec in encoder.loaded.signature.inputs]
        feeds.append({n: prepared[t] for n, t in zip(names, encoder.inputs)})
    turn = iter(range(10**12))
    return lambda: session.run(None, feeds[next(turn) % len(feeds)]) and None


def _raw_throughput(sentences: np.ndarray, batch: int, layout: str, seconds: float) -> float:
    """Items/s of raw ORT: one session on every core, or one single-thread session per core in parallel."""
    if layout == "1 session x all cores":
        return _items_per_second(_raw_encoder(sentences, batch), batch, seconds)
    runs = [_raw_encoder(sentences, batch, threads=1) for _ in range(os.cpu_count() or 1)]
    with ThreadPoolExecutor(len(runs)) as pool:  # NOTE: session.run releases the GIL
        return sum(pool.map(lambda run: _items_per_second(run, batch, seconds), runs))


LAYOUTS = ("1 session x all cores", "1-thread session per core")


def _items_per_second(fn: Callable[[], None], items: int, seconds: float) -> float:
    fn()
    began = time.perf_counter()
    calls = 0
    while time.perf_counter() - began < seconds:
        fn()
        calls += 1
    return calls * items / (time.perf_counter() - began)


async def _saturate(engine: Engine, name: str, make: Callable[[int], dict[str, Any]], seconds: float,
                    clients: int) -> float:
    """Items per second with ``clients`` requests always outstanding."""
    answered = 0
    stop = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal answered
        while time.perf_counter() < stop:
            await engine.predict(name, make(index))
            answered += 1
            index += clients

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return answered / (time.perf_counter() - began)


def saturated_throughput(local: Workbench, seconds: float, rounds: int, in_flight: int) -> None:
    sentences = np.array(topic_sentences("test")[0] * 4, dtype=object)
    raw = {(layout, batch): _raw_throughput(sentences, batch, layout, seconds / 2)
           for layout in LAYOUTS for batch in (1, 8, 32, 64)}
    best_layout, best = max(raw, key=lambda key: raw[key])
    local.set_batching("text", max_batch_size=best, max_delay_ms=10, max_in_flight=in_flight)

    def make(i: int) -> dict[str, Any]:
        return {"text": sentences[i % len(sentences):][:1]}

    results = []
    for _ in range(rounds):  # NOTE: alternate, so drift on a shared machine hits both alike
        piped = local._portal.call(lambda: _saturate(local.engine, "text", make, seconds, clients=4 * best))
        again = _raw_throughput(sentences, best, best_layout, seconds / 2)
        results.append((piped, again))
    stats = local.stats("text")
    print(f"\n2. saturated throughput, text (one sentence per request), {len(stats['workers'])} workers")
    for layout in LAYOUTS:
        print(f"   raw encoder session.run, {layout}, items/s by batch: "
              + ", ".join(f"{b}: {v:.0f}" for (lay, b), v in raw.items() if lay == layout))
    for index, (piped, again) in enumerate(results, 1):
        print(f"   round {index}: pipeline on LocalCluster {piped:6.0f} items/s, raw best ({best_layout}, batch "
              f"{best}) {again:6.0f} items/s, ratio {piped / again:.3f} (goal >= 0.9)")
    ratios = sorted(piped / again for piped, again in results)
    print(f"   median ratio {np.median(ratios):.3f} over {rounds} rounds, {in_flight} batches in flight "
          f"(goal >= 0.9); mean batch size {stats['batch_size']['mean']:.1f}, p99 {stats['latency_ms']['p99']:.1f} ms")


def knob_change(local: Workbench) -> None:
    rows = load_tabular_data().x_test
    seen: list[tuple[float, int]] = []
    deployment = local.engine.deployment("tabular")
    runner = deployment.runner

    async def recording(tensors: dict[str, np.ndarray]) -> Any:
        seen.append((time.perf_counter(), len(tensors["features"])))
        return await runner(tensors)

    async def scenario() -> list[float]:
        deployment.batcher.replace_runner(recording)
        delays = []
        small, large = 2, 8
        for _ in range(10):
            local.engine.set_batching("tabular", max_batch_size=small, max_delay_ms=2)
            load = asyncio.ensure_future(_saturate(local.engine, "tabular", lambda i: {"features": rows[i % 100:][:1]},
                                                   0.6, clients=32))
            await asyncio.sleep(0.3)
            changed = time.perf_counter()
            local.engine.set_batching("tabular", max_batch_size=large)
            await load
            first = next(t for t, rows_ in seen if t >= changed and rows_ > small)
            delays.append((first - changed) * 1e3)
        deployment.batcher.replace_runner(runner)
        return delays

    delays = local._portal.call(scenario)
    print("\n3. knob change: set_batching -> first batch formed with the new size, under load of 32 clients")
    print(f"   median {np.median(delays):.3f} ms, max {max(delays):.3f} ms over {len(delays)} changes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measured path")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds of the throughput comparison")
    parser.add_argument("--in-flight", type=int, default=None,
                        help="text batches in flight (default: two per worker thread, so each worker has the next "
                             "batch at hand when it finishes one)")
    args = parser.parse_args()
    build_demo_models(log=lambda _: None)
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}, "
          f"LocalCluster of {args.workers} workers x 1 thread")
    with Workbench.local(workers=args.workers) as local, Workbench.inprocess() as inproc:
        for wb in (local, inproc):
            wb.deploy("tabular")
        local.deploy("text")
        dispatch_overhead(local, inproc, args.seconds)
        saturated_throughput(local, args.seconds, args.rounds, args.in_flight or 2 * args.workers)
        knob_change(local)

if __name__ == "__main__":
    main()
