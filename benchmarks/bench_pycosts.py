"""p99 latency under steady load with and without the GC mitigations, alternating in the same run.

An in-process engine serves the tabular demo; each request first decodes a JSON
body (as the REST front does), so the serving process allocates as it would in
production, and the process keeps a realistic long-lived heap (a cache of
request records). Rounds alternate between the interpreter's defaults
(threshold 700, nothing frozen) and the mitigations (``gc.freeze()`` after
warm-up, first-generation threshold raised), so drift on a shared machine hits
both alike. GC pauses and GIL contention of each round come from
:mod:`workbench.monitor.pycosts`.

``--server``: the same comparison where it matters, two real ``workbench serve tabular``
processes (LocalCluster workers, the dashboard mounted: the heap of a real serving process,
with FastAPI, Dask and Panel loaded), one started with ``WORKBENCH_GC_MITIGATE=0`` and one
with the defaults (mitigations on), under the same steady ``wrk`` load (``--connections``),
rounds alternating; each server's own GC pauses are read from its stats afterwards.

Run: ``python benchmarks/bench_pycosts.py [--seconds S] [--rounds N] [--threshold0 T] [--server [--connections C]]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import time
from collections import deque
from typing import Any

import numpy as np

from workbench.demo import build_demo_models
from workbench.demo.tabular import load_tabular_data
from workbench.engine import Engine
from workbench.monitor.pycosts import GcPauses, mitigate, process_costs

DEFAULT_THRESHOLDS = gc.get_threshold()


def _defaults() -> None:
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_THRESHOLDS)


async def _round(engine: Engine, bodies: list[str], seconds: float, rate_rps: float,
                 log: deque[Any]) -> dict[str, Any]:
    """Requests at a steady rate (open loop) for ``seconds``; latency includes decoding the body."""
    pauses = GcPauses(window_s=seconds * 10)  # this round's pauses only
    pauses.install()
    latencies: list[float] = []

    async def one(body: str) -> None:
        began = time.perf_counter()
        request = json.loads(body)
        log.append(request)  # NOTE: a bounded request log: objects that live long enough to reach older generations
        rows = np.asarray(request["inputs"][0]["data"], dtype=np.float32).reshape(-1, 30)
        await engine.predict("tabular", {"features": rows})
        latencies.append((time.perf_counter() - began) * 1e3)

    tasks, start = [], time.perf_counter()
    for i in range(int(seconds * rate_rps)):
        delay = start + i / rate_rps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(bodies[i % len(bodies)])))
    await asyncio.gather(*tasks)
    pauses.uninstall()
    window = pauses.snapshot()
    return {"latencies": latencies, "collections": window["count"], "pause_ms": window["total_ms"],
            "longest_ms": window["longest_ms"], "gil": process_costs().gil.snapshot()["contention"]}


async def main(seconds: float, rounds: int, rate_rps: float, threshold0: int) -> None:
    os.environ["WORKBENCH_GC_MITIGATE"] = "0"  # NOTE: this benchmark switches the mitigations itself
    build_demo_models()
    data = load_tabular_data()
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"id": str(i), "inputs": [{"name": "features", "shape": [4, 30], "datatype": "FP32",
                                                     "data": np.nan_to_num(data.x_test[rng.integers(0, 100, 4)])
                                                     .ravel().tolist()}]}) for i in range(256)]
    # NOTE: a long-lived heap of small objects, as a request log or a feature cache keeps: what every full
    # collection traverses unless it is frozen.
    kept = [{"id": i, "features": [float(i)] * 8, "label": str(i)} for i in range(300_000)]
    engine = Engine.inprocess()
    await engine.deploy("tabular", batching={"max_batch_size": 16, "max_delay_ms": 1.0})
    log: deque[Any] = deque(maxlen=20_000)
    await _round(engine, bodies, 1.0, rate_rps, log)  # warm-up
    results: dict[str, list[dict[str, Any]]] = {"defaults": [], "mitigated": []}
    for _ in range(rounds):
        for mode in ("defaults", "mitigated"):
            _defaults()
            gc.collect()
            if mode == "mitigated":
                mitigate(freeze=True, threshold0=threshold0)
            results[mode].append(await _round(engine, bodies, seconds, rate_rps, log))
    _defaults()
    await engine.close()
    del kept

    print(f"python {platform.python_version()}, {os.cpu_count()} cpus; {rounds} x {seconds:.0f} s per mode at "
          f"{rate_rps:.0f} req/s; mitigated: gc.freeze() + threshold0={threshold0} (defaults {DEFAULT_THRESHOLDS})")
    print(f"{'mode':<10} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8} "
          f"{'gc n':>6} {'gc ms':>8} {'gc max':>7} {'gil':>6}")
    summary = {}
    for mode, runs in results.items():
        lat = np.concatenate([r["latencies"] for r in runs])
        p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
        summary[mode] = p99
        print(f"{mode:<10} {lat.size:>8} {p50:>8.2f} {p99:>8.2f} {p999:>9.2f} {lat.max():>8.2f} "
              f"{sum(r['collections'] for r in runs):>6} {sum(r['pause_ms'] for r in runs):>8.1f} "
              f"{max(r['longest_ms'] for r in runs):>7.2f} {np.mean([r['gil'] for r in runs]):>6.3f}")
    for i in range(rounds):
        d, m = results["defaults"][i], results["mitigated"][i]
        print(f"round {i + 1}: p99 defaults {np.percentile(d['latencies'], 99):.2f} ms, mitigated "
              f"{np.percentile(m['latencies'], 99):.2f} ms")
    print(f"p99 ratio mitigated/defaults: {summary['mitigated'] / summary['defaults']:.2f}")


def serve_rounds(seconds: float, rounds: int, connections: int) -> None:
    """p99 of two ``workbench serve`` processes, defaults vs mitigations, under the same wrk load, alternating."""
    import contextlib
    import sys
    import tempfile
    import urllib.request
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_http import INFER, _free_port, _process, _wrk, tabular_bodies

    build_demo_models(log=lambda _: None)
    bodies = tabular_bodies(load_tabular_data().x_test)
    path = INFER.format("tabular")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        ports = {}
        for mode, flag in (("defaults", "0"), ("mitigated", "1")):
            ports[mode] = _free_port()
            os.environ["WORKBENCH_GC_MITIGATE"] = flag
            stack.enter_context(_process([sys.executable, "-m", "workbench.cli", "serve", "tabular", "--port",
                                          str(ports[mode])], ports[mode], work / f"{mode}.log"))
        os.environ.pop("WORKBENCH_GC_MITIGATE")
        for port in ports.values():
            _wrk(port, path, bodies, connections, 2.0, work)  # warm-up
        loads: dict[str, list[Any]] = {"defaults": [], "mitigated": []}
        for round_ in range(rounds):
            order = ("defaults", "mitigated") if round_ % 2 == 0 else ("mitigated", "defaults")
            for mode in order:
                loads[mode].append(_wrk(ports[mode], path, bodies, connections, seconds, work))
        costs = {}
        for mode, port in ports.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pipelines/tabular/stats", timeout=10) as reply:
                costs[mode] = json.loads(reply.read())["python"]["serving"]
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus; two `workbench serve tabular` (LocalCluster, "
          f"dashboard mounted); wrk -c{connections}, {rounds} rounds x {seconds:.0f} s each, alternating")
    print(f"{'mode':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}   GC in the last 60 s: n, total ms, longest ms, "
          "full collections n / longest ms, frozen objects")
    for mode, runs in loads.items():
        gc_ = costs[mode]["gc"]
        full = gc_["by_generation"]["2"]
        print(f"{mode:<10} {np.median([r.rps for r in runs]):>8.0f} {np.median([r.p50_ms for r in runs]):>8.2f} "
              f"{np.median([r.p99_ms for r in runs]):>8.2f}   {gc_['count']}, {gc_['total_ms']:.1f}, "
              f"{gc_['longest_ms']:.1f}; {full['count']} / {full['longest_ms']:.1f}; {gc_['frozen_objects']}")
    ratios = [m.p99_ms / d.p99_ms for d, m in zip(loads["defaults"], loads["mitigated"])]
    print("p99 mitigated/defaults per round: " + " / ".join(f"{r:.2f}" for r in ratios)
          + f"; median {np.median(ratios):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=400.0, help="requests per second")
    parser.add_argument("--threshold0", type=int, default=10_000)
    parser.add_argument("--server", action="store_true", help="compare two real `workbench serve` processes")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (with --server)")
    args = parser.parse_args()
    if args.server:
        serve_rounds(args.seconds, args.rounds, args.connections)
    else:
        asyncio.run(main(args.seconds, args.rounds, args.rate, args.threshold0))
