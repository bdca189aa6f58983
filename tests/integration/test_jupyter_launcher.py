"""The launcher tile in a real, headless JupyterLab: listed, and the server it starts answers behind the proxy.

JupyterLab runs with its configuration, runtime and IPython folders in a temporary
folder. The tile's server is made to start in seconds (``WORKBENCH_PROXY_INPROCESS``,
one pipeline); everything the test started must be gone when JupyterLab stops.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from processes import MARKER, processes_marked
from waiting import free_port


@dataclass
class Lab:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    marker: str

    def get(self, path: str, timeout_s: float = 10.0) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"token {self.token}"}, timeout=timeout_s)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("jupyterlab")
    port, token, marker = free_port(), secrets.token_hex(16), secrets.token_hex(8)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(folder / "config"), "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
           "IPYTHONDIR": str(folder / "ipython"), "WORKBENCH_HOME": str(demo_home),
           "WORKBENCH_PROXY_INPROCESS": "1", "WORKBENCH_PROXY_TARGETS": "tabular", MARKER: marker}
    log = folder / "lab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip", "127.0.0.1",
             "--port", str(port), f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    running = Lab(f"http://127.0.0.1:{port}", token, process, log, marker)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if running.get("/api/status", timeout_s=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"JupyterLab did not answer within 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.25)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_the_launcher_lists_the_inference_workbench_tile(lab: Lab) -> None:
    answer = lab.get("/server-proxy/servers-info")
    assert answer.status_code == 200
    (server,) = [s for s in answer.json()["server_processes"] if s["name"] == "workbench"]
    entry = server["launcher_entry"]
    assert entry["enabled"] and entry["title"] == "Inference Workbench"
    assert entry["path_info"] == "workbench/dashboard"
    assert server["new_browser_tab"] is False
    icon = lab.get(entry["icon_url"])
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.text.lstrip().startswith("<svg")


def test_the_tile_starts_the_workbench_behind_the_proxy(lab: Lab) -> None:
    # NOTE: the first request under /workbench/ starts `workbench serve` and waits until it answers.
    ready = lab.get("/workbench/v2/health/ready", timeout_s=120)
    assert ready.status_code == 200, lab.log.read_text()[-3000:]
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}
    answer = httpx.post(f"{lab.url}/workbench/v2/models/tabular/infer", json=body,
                        headers={"Authorization": f"token {lab.token}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert {o["name"] for o in answer.json()["outputs"]} >= {"label", "probability"}
    assert any(" serve tabular " in c for c in processes_marked(lab.marker))


def test_the_dashboard_works_under_the_proxy_prefix(lab: Lab) -> None:
    page = lab.get("/workbench/dashboard", timeout_s=60)
    assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:500]
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page.text)
    assert scripts, "the dashboard page loads no script"
    # NOTE: relative URLs resolve under /workbench/, where the proxy forwards them; absolute ones would miss it.
    assert not [s for s in scripts if s.startswith("/") or "://" in s], scripts
    for script in scripts[:3]:
        assert lab.get(f"/workbench/{script}").status_code == 200, script


def test_nothing_is_left_running_after_jupyterlab_stops(lab: Lab) -> None:
    lab.process.send_signal(signal.SIGTERM)
    lab.process.wait(timeout=30)
    deadline = time.monotonic() + 15
    while (left := processes_marked(lab.marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left
