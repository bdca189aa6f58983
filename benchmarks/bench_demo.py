"""The light pipeline inside the demo: tabular's latency with every demo served, against tabular served alone.

``workbench demo`` serves tabular, text (MiniLM) and search on one LocalCluster, each with its traffic
(``--rate`` requests/s, Poisson, by default). The goal is that the light pipeline does not pay for the heavy
ones: tabular's p99 in the full demo at most 5x its p99 when ``workbench demo --only tabular`` serves it alone
at the same traffic. Both runs are whole ``workbench demo`` processes, started one after the other (their order
alternates by round), and the figures are those of the demo's own summary (the traffic lab's p50 and p99,
request to answer, over the whole run).

Run: ``python benchmarks/bench_demo.py [--seconds S] [--rounds R] [--rate RPS]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

_SERVED = re.compile(r"^\s+(\w+): (\d+) requests served in ([\d.]+) s, p50 ([\d.]+) ms, p99 ([\d.]+) ms, (\d+) errors")


def run_demo(seconds: float, rate: float, only: list[str]) -> dict[str, dict[str, float]]:
    """One ``workbench demo`` run; the summary's figures per pipeline."""
    command = [str(Path(sys.executable).with_name("workbench")), "demo", "--duration", f"{seconds:g}",
               "--rate", f"{rate:g}", "--port", "0", *(arg for name in only for arg in ("--only", name))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    figures = {}
    for line in out.stdout.splitlines():
        found = _SERVED.match(line)
        if found:
            name, served, took, p50, p99, errors = found.groups()
            figures[name] = {"served": int(served), "seconds": float(took), "p50_ms": float(p50),
                             "p99_ms": float(p99), "errors": int(errors)}
    if "tabular" not in figures:
        raise RuntimeError(f"no summary line for tabular in:\n{out.stdout[-3000:]}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each demo run")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs (full demo, tabular alone)")
    parser.add_argument("--rate", type=float, default=150.0, help="requests/s per pipeline (the demo's default)")
    args = parser.parse_args()
    print(f"# workbench demo for {args.seconds:g} s at {args.rate:g} requests/s per pipeline, {args.rounds} round(s)")
    ratios, ratios_p50 = [], []
    for round_index in range(args.rounds):
        order = [("full", []), ("alone", ["tabular"])]
        if round_index % 2:
            order.reverse()
        results = {}
        for label, only in order:
            results[label] = figures = run_demo(args.seconds, args.rate, only)
            for name, f in figures.items():
                print(f"  round {round_index + 1}  {label:<6} {name:<8} {f['served']:>7} served  "
                      f"p50 {f['p50_ms']:8.2f} ms  p99 {f['p99_ms']:8.2f} ms  {f['errors']} errors")
        full, alone = results["full"]["tabular"], results["alone"]["tabular"]
        ratios.append(full["p99_ms"] / alone["p99_ms"])
        ratios_p50.append(full["p50_ms"] / alone["p50_ms"])
    verdict = "met" if statistics.median(ratios) <= 5 else "NOT met"
    print(f"tabular p99 in the full demo / alone: {' / '.join(f'{r:.2f}' for r in ratios)}, "
          f"median {statistics.median(ratios):.2f} (goal <= 5: {verdict})")
    print(f"tabular p50 in the full demo / alone: {' / '.join(f'{r:.2f}' for r in ratios_p50)}, "
          f"median {statistics.median(ratios_p50):.2f}")


if __name__ == "__main__":
    main()
