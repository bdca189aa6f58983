"""The benchmarks run as documented and print a row or a ratio for every case (not how fast: that is their job)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bench_pipeline_prints_every_case(demo_home: Path) -> None:
    env = {**os.environ, "WORKBENCH_HOME": str(demo_home)}
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_pipeline.py", "--seconds", "0.01", "--turn", "2", "--hand-written",
         "--encoder-only", "--text-variant", "int8"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {}
    for line in done.stdout.splitlines():
        if line.startswith(("#", "pipeline ")):
            continue
        *name, batch, raw, piped, ratio = line.split()
        rows[(" ".join(name), int(batch))] = (float(raw), float(piped), float(ratio))
    cases = ("tabular", "text", "text, raw = encoder only", "text, by hand")
    assert set(rows) == {(case, batch) for case in cases for batch in (1, 32)}, done.stdout
    for (case, batch), (raw, piped, ratio) in rows.items():
        assert raw > 0 and piped > 0, (case, batch)
        assert abs(ratio - piped / raw) < 0.01 * ratio, (case, batch)  # the printed ratio is of the printed rates


def test_bench_peers_prints_every_row_without_the_peers(demo_home: Path) -> None:
    """The peer benchmark with the servers of .venv only (no peer virtualenv needed), each answer checked first."""
    env = {**os.environ, "WORKBENCH_HOME": str(demo_home)}
    done = subprocess.run(
        [sys.executable, "benchmarks/peers/bench_peers.py", "--servers", "workbench,naive,starlette", "--models",
         "tabular", "--connections", "1,4", "--seconds", "0.3", "--inprocess", "--plot", ""],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    medians, ratios = done.stdout.split("\nmedians over 1 round\n")[1].split("\neach server / the workbench")
    rows = {(m[1], int(m[2])): float(m[3])
            for m in re.finditer(r"^tabular\s+(\S.*?)\s+(\d+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+\S+$", medians, re.M)}
    servers = ("workbench serve", "naive FastAPI", "Starlette ceiling")
    assert set(rows) == {(server, conns) for server in servers for conns in (1, 4)}, done.stdout
    assert all(rate > 0 for rate in rows.values()), done.stdout
    assert len(re.findall(r"^tabular\s+(naive FastAPI|Starlette ceiling)\s+\d+\s+[\d.]+x", ratios, re.M)) == 4
    assert done.stdout.count("16 rows match") == 2, done.stdout  # the workbench's and the naive server's answers


def test_bench_demo_compares_tabular_in_the_full_demo_with_tabular_alone(demo_home: Path) -> None:
    """Both demo runs happen (the full one serves three pipelines, the other tabular only); the ratio is theirs."""
    env = {**os.environ, "WORKBENCH_HOME": str(demo_home)}
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_demo.py", "--seconds", "2", "--rate", "20"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = r"^  round 1  (full|alone)\s+(\w+)\s+(\d+) served  p50\s+([\d.]+) ms  p99\s+([\d.]+) ms  0 errors$"
    rows = re.findall(line, done.stdout, re.M)
    assert sorted((label, name) for label, name, *_ in rows) == [
        ("alone", "tabular"), ("full", "search"), ("full", "tabular"), ("full", "text")], done.stdout
    assert all(int(served) > 0 for *_, served, _, _ in rows), done.stdout
    p99 = {label: float(value) for label, name, _, _, value in rows if name == "tabular"}
    ratio = float(re.search(r"full demo / alone: ([\d.]+), median", done.stdout)[1])
    assert abs(ratio - p99["full"] / p99["alone"]) < 0.01 * ratio + 0.005, done.stdout


def test_bench_claims_prints_both_ratios(demo_home: Path) -> None:
    env = {**os.environ, "WORKBENCH_HOME": str(demo_home)}
    done = subprocess.run([sys.executable, "benchmarks/bench_claims.py", "--records", "500", "--runs", "1"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = dict(re.findall(r"^(predlog|int8)\s.*; ratio ([\d.]+)$", done.stdout, re.M))
    assert set(figures) == {"predlog", "int8"}, done.stdout
    assert all(float(ratio) > 0 for ratio in figures.values()), done.stdout


def test_fuzz_long_runs_the_fuzzing_against_the_cluster_server(demo_home: Path) -> None:
    env = {**os.environ, "WORKBENCH_HOME": str(demo_home)}
    done = subprocess.run([sys.executable, "benchmarks/fuzz_long.py", "--examples", "5"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout and "fuzz_long: 5 examples per test (LocalCluster)" in done.stdout, done.stdout


def test_bench_soak_reports_latency_per_minute_errors_and_memory_growth(demo_home: Path) -> None:
    env = {**os.environ, "WORKBENCH_HOME": str(demo_home)}
    done = subprocess.run([sys.executable, "benchmarks/bench_soak.py", "--minutes", "0.1", "--capacity-s", "1",
                           "--sample-s", "1", "--warmup-min", "0"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^\s+1\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", done.stdout, re.M), done.stdout
    assert re.search(r"^serving\s+[\d.]+ MiB\s+[\d.]+ MiB\s+-?[\d.]+%$", done.stdout, re.M), done.stdout
    summary = re.search(r"^soak: (\d+) answered, (\d+) errors; largest RSS growth", done.stdout, re.M)
    assert summary and int(summary[1]) > 0, done.stdout
