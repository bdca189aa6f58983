"""The notebooks run top to bottom in a fresh kernel of this environment, and leave no process behind.

The kernel is the ``python3`` kernel of ipykernel, whose command names ``python``:
jupyter_client runs it with this interpreter (``sys.executable``), so the notebooks see
the same environment as the tests. Every process a notebook starts inherits a marker in
its environment; none may be alive once the kernel has stopped. The executed notebooks
are kept in ``test-artifacts/notebooks/`` for reading.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from processes import MARKER, processes_marked

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"


def execute(notebook: nbformat.NotebookNode, folder: Path, marker: str) -> None:
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    client.execute(env={**os.environ, MARKER: marker, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(autouse=True)
def private_jupyter_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_home: Path) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("WORKBENCH_HOME", str(demo_home))


def test_the_kernel_runs_in_this_environment(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    execute(notebook, tmp_path, secrets.token_hex(8))
    assert notebook.cells[0].outputs[0]["text"].strip() == sys.executable


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    marker = secrets.token_hex(8)
    began = time.perf_counter()
    try:
        execute(notebook, path.parent, marker)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, ARTIFACTS / path.name)
    print(f"{path.name}: {time.perf_counter() - began:.1f} s")
    tracebacks = [cell.source[:80] for cell in notebook.cells if cell.cell_type == "code"
                  for output in cell.get("outputs", []) if "Traceback" in str(output.get("text", ""))]
    assert not tracebacks, f"cells printed a traceback: {tracebacks}"
    deadline = time.monotonic() + 30
    while (left := processes_marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"{path.name} left processes behind: {left}"
