"""The command line, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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


def test_demo_prints_predictions_and_stage_timings(demo_home: Path) -> None:
    result = _workbench("demo", "--rounds", "3", home=demo_home)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tabular: up to date" in out and "text: up to date" in out
    for expected in ("label=", "risk_bucket=", "topic=", "confidence=", "tokenize", "encoder", "impute", "total",
                     "CPUExecutionProvider"):
        assert expected in out, expected


def test_unknown_demo_is_a_clean_error(demo_home: Path) -> None:
    result = _workbench("models", "build", "--only", "nope", home=demo_home)
    assert result.returncode == 1
    assert "unknown demo 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
