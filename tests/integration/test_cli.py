"""The command line, run as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from processes import MARKER, processes_marked
from waiting import eventually


def _workbench(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKBENCH_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=env, capture_output=True, text=True,
                          timeout=240, check=False)


def test_models_list(demo_home: Path) -> None:
    result = _workbench("models", "list", home=demo_home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("tabular") and "gbt" in line and "accuracy=" in line for line in lines)
    assert any(line.startswith("minilm") and "int8" in line for line in lines)


def test_demo_serves_on_a_local_cluster_and_shows_latency(demo_home: Path) -> None:
    result = _workbench("demo", "--duration", "3", "--rate", "40", "--port", "0", home=demo_home)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tabular: up to date" in out and "text: up to date" in out and "search: up to date" in out
    assert "Dask cluster: 2 workers" in out and "Dask dashboard: http://" in out
    assert "Dashboard: http://127.0.0.1:" in out and "/dashboard" in out
    for expected in ("label=", "risk_bucket=", "topic=", "confidence=", "p50", "p99", "req/s", "tokenize", "encoder",
                     "impute", "transfer", "end to end", "batch sizes", "drift scored against the 426 training rows",
                     "drift: ", "business (gbt, last ", "feature cache (embed_candidates, minilm-fp32): hit rate "):
        assert expected in out, expected
    served = [line for line in out.splitlines() if "requests served" in line]
    assert len(served) == 3 and all(" 0 errors" in line for line in served), served
    assert all(int(line.split(": ", 1)[1].split()[0]) > 0 for line in served), served


def test_ctrl_c_stops_the_demo_gracefully_with_every_request_answered(demo_home: Path) -> None:
    """Ctrl-C in a terminal: SIGINT to the whole foreground process group, Dask's worker processes included."""
    marker = f"ctrl-c-{os.getpid()}"
    env = {**os.environ, "WORKBENCH_HOME": str(demo_home), MARKER: marker}
    demo = subprocess.Popen([sys.executable, "-m", "workbench.cli", "demo", "--rate", "40", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 180
        while sum("req/s" in line for line in lines) < 6:  # NOTE: two rounds of live lines: traffic flows
            line = demo.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines[-30:])
            lines.append(line)
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    out = "".join(lines) + rest
    assert demo.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    served = [line for line in out.splitlines() if "requests served" in line]
    assert len(served) == 3 and all(" 0 errors" in line for line in served), served
    eventually(lambda: not processes_marked(marker), timeout_s=30, what="no process of the demo left")


def test_unknown_demo_is_a_clean_error(demo_home: Path) -> None:
    result = _workbench("models", "build", "--only", "nope", home=demo_home)
    assert result.returncode == 1
    assert "unknown demo 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    result = _workbench("demo", "--only", "nope", "--duration", "1", home=demo_home)
    assert result.returncode == 1 and "unknown demo 'nope'" in result.stderr and "Traceback" not in result.stderr
