"""Soak: ``workbench serve tabular text`` on its LocalCluster at about 70 % of capacity for a long while.

First each pipeline's capacity is measured alone (closed loop, ``--connections``
at once, requests answered per second). Then both get open-loop (Poisson)
traffic for ``--minutes`` (10), each at its share of ``--load`` (0.7): half of
0.7 of its capacity alone, so that together they keep the machine about 70 %
busy. Tabular requests have one row, text requests two sentences. Every ``--sample-s`` seconds the resident memory
(RSS) of the serving process and of every worker process (its descendants) is
read. Printed: p50/p99 per minute and pipeline, the errors (any answer but 200),
and the growth of each process's RSS from the end of the warm-up (the first
``--warmup-min`` minutes) to the end (goal: under 5 %, no error).

Run: ``python benchmarks/bench_soak.py [--minutes M] [--load F]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from bench_http import _free_port, _process, tabular_bodies, text_bodies

from workbench.demo import build_demo_models
from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import load_tabular_data

HEADERS = {"Content-Type": "application/json"}


async def _capacity(http: httpx.AsyncClient, url: str, bodies: Sequence[bytes], connections: int,
                    seconds: float) -> float:
    """Requests answered per second by ``connections`` closed-loop senders."""
    done = 0
    stop = time.monotonic() + seconds

    async def sender(offset: int) -> None:
        nonlocal done
        i = offset
        while time.monotonic() < stop:
            reply = await http.post(url, content=bodies[i % len(bodies)], headers=HEADERS)
            done += reply.status_code == 200
            i += connections

    began = time.monotonic()
    await asyncio.gather(*(sender(k) for k in range(connections)))
    return done / (time.monotonic() - began)


def _rss(pid: int) -> dict[str, int]:
    """RSS in bytes of the serving process and of each of its descendants, by a name that stays the same."""
    found = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        found["serving"] = root.memory_info().rss
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                found[f"pid {child.pid} ({' '.join(child.cmdline()[-2:])[:40]})"] = child.memory_info().rss
    return found


async def _soak(http: httpx.AsyncClient, urls: dict[str, str], bodies: dict[str, Sequence[bytes]],
                rates: dict[str, float], seconds: float, pid: int, sample_s: float) -> dict[str, Any]:
    latencies: dict[str, list[tuple[float, float]]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    memory: list[tuple[float, dict[str, int]]] = []
    began = time.monotonic()
    pending: set[asyncio.Task[None]] = set()

    async def one(name: str, body: bytes) -> None:
        sent = time.monotonic()
        try:
            reply = await http.post(urls[name], content=body, headers=HEADERS)
            if reply.status_code != 200:
                errors[name].append(f"{reply.status_code} {reply.text[:120]}")
                return
        except httpx.HTTPError as exc:
            errors[name].append(f"{type(exc).__name__}: {exc}")
            return
        latencies[name].append((sent - began, (time.monotonic() - sent) * 1e3))

    async def stream(name: str) -> None:
        rng = np.random.default_rng(len(name))
        at, i = 0.0, 0
        while at < seconds:
            at += rng.exponential(1 / rates[name])  # NOTE: Poisson arrivals, open loop
            delay = began + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(one(name, bodies[name][i % len(bodies[name])]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1

    async def sampler() -> None:
        while time.monotonic() - began < seconds:
            memory.append((time.monotonic() - began, _rss(pid)))
            await asyncio.sleep(sample_s)

    await asyncio.gather(*(stream(name) for name in urls), sampler())
    await asyncio.gather(*pending)
    memory.append((time.monotonic() - began, _rss(pid)))
    return {"latencies": latencies, "errors": errors, "memory": memory}


def _report(result: dict[str, Any], seconds: float, warmup_s: float) -> None:
    print(f"\n{'minute':>6} " + " ".join(f"{name + ' p50':>12} {name + ' p99':>12}" for name in result["latencies"]))
    for minute in range(int(np.ceil(seconds / 60))):
        cells = []
        for samples in result["latencies"].values():
            values = np.array([ms for at, ms in samples if minute * 60 <= at < (minute + 1) * 60])
            cells += [f"{np.percentile(values, 50):>12.1f}", f"{np.percentile(values, 99):>12.1f}"] if values.size \
                else [f"{'-':>12}", f"{'-':>12}"]
        print(f"{minute + 1:>6} " + " ".join(cells))
    for name, errors in result["errors"].items():
        print(f"errors {name}: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    total_errors = sum(len(e) for e in result["errors"].values())
    answered = sum(len(s) for s in result["latencies"].values())
    memory = result["memory"]
    warm = next((rss for at, rss in memory if at >= warmup_s), memory[0][1])
    last = memory[-1][1]
    print(f"\n{'process':<52} {'RSS after warm-up':>18} {'RSS at the end':>15} {'growth':>8}")
    growths = []
    for name, start in warm.items():
        if name in last:
            growth = (last[name] - start) / start
            growths.append(growth)
            print(f"{name:<52} {start / 2**20:>15.1f} MiB {last[name] / 2**20:>12.1f} MiB {growth:>7.1%}")
    print(f"\nsoak: {answered} answered, {total_errors} errors; largest RSS growth after warm-up "
          f"{max(growths, default=float('nan')):.1%} (goal < 5 %, 0 errors)")


async def main(minutes: float, load: float, connections: int, capacity_s: float, sample_s: float,
               warmup_min: float) -> None:
    build_demo_models(log=lambda _: None)
    port = _free_port()
    bodies = {"tabular": tabular_bodies(load_tabular_data().x_test),
              "text": text_bodies(topic_sentences("test")[0][:128], per_request=2)}
    with tempfile.TemporaryDirectory() as tmp, _process(
            [sys.executable, "-m", "workbench.cli", "serve", "tabular", "text", "--port", str(port)], port,
            Path(tmp) / "serve.log") as pid:
        urls = {name: f"http://127.0.0.1:{port}/v2/models/{name}/infer" for name in bodies}
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            capacity = {name: await _capacity(http, urls[name], bodies[name], connections, capacity_s)
                        for name in urls}
            rates = {name: load * rps / len(capacity) for name, rps in capacity.items()}
            print(f"python {platform.python_version()}, {os.cpu_count()} cpus; capacity alone (req/s): "
                  + ", ".join(f"{n} {c:.0f}" for n, c in capacity.items()) + f"; soak at {load:.0%}: "
                  + ", ".join(f"{n} {r:.0f} req/s" for n, r in rates.items()) + f" for {minutes:g} min")
            seconds = minutes * 60
            result = await _soak(http, urls, bodies, rates, seconds, pid, sample_s)
    _report(result, seconds, warmup_min * 60)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--load", type=float, default=0.7, help="share of each pipeline's capacity")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop senders measuring capacity")
    parser.add_argument("--capacity-s", type=float, default=10.0, help="seconds per capacity measurement")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between two memory samples")
    parser.add_argument("--warmup-min", type=float, default=2.0, help="minutes before the memory baseline")
    args = parser.parse_args()
    asyncio.run(main(args.minutes, args.load, args.connections, args.capacity_s, args.sample_s, args.warmup_min))
