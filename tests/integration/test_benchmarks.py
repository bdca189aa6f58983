"""The in-process benchmark runs as documented and prints a ratio for every case (not how fast: that is its job)."""

from __future__ import annotations

import os
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
