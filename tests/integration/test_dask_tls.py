"""A cluster that uses TLS: the serving front passes Dask's security settings through.

A CA and one certificate (for 127.0.0.1) are made with ``openssl``; the scheduler and a
worker are started apart with them, and ``workbench serve --scheduler tls://...`` gets
the client side with ``--tls-ca-file/--tls-cert/--tls-key``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from processes import stop_all
from waiting import eventually

from workbench.backend.dask import tls_security
from workbench.demo.tabular import load_tabular_data

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=workbench test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "node.key",
             "-out", "node.csr", cwd=folder)
    _openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
             "-extfile", "san.ext", "-out", "node.pem", cwd=folder)
    return {"ca": str(folder / "ca.pem"), "cert": str(folder / "node.pem"), "key": str(folder / "node.key"),
            "folder": str(folder)}


@pytest.fixture(scope="module")
def tls_cluster(certificates: dict[str, str], demo_home: object) -> Iterator[str]:
    folder = Path(certificates["folder"])
    tls = ["--tls-ca-file", certificates["ca"], "--tls-cert", certificates["cert"], "--tls-key", certificates["key"]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WORKBENCH_INTRA_OP_THREADS": "1"}
    scheduler_file = folder / "scheduler.json"
    processes = []
    try:
        with open(folder / "scheduler.log", "wb") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0",
                 "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file), *tls],
                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT))
        eventually(lambda: "address" in json.loads(scheduler_file.read_text() or "{}") if scheduler_file.exists()
                   else processes[0].poll() is not None, what="the TLS scheduler")
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tls://"), address
        with open(folder / "worker.log", "wb") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--host", "127.0.0.1", *tls], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT))
        yield address
    finally:
        stop_all(processes)


def test_workbench_connects_to_a_tls_cluster_and_predicts(tls_cluster: str, certificates: dict[str, str]) -> None:
    from workbench import Workbench

    security = tls_security(certificates["ca"], certificates["cert"], certificates["key"])
    with Workbench.connect(tls_cluster, security=security) as wb:
        eventually(lambda: len(wb.describe()["workers"]) == 1, what="the TLS worker")
        wb.deploy("tabular")
        rows = load_tabular_data().x_test[:4]
        prediction = wb.predict("tabular", {"features": rows})
        assert prediction["label"].shape == (4,)
        assert all(w["address"].startswith("tls://") for w in wb.stats("tabular")["workers"])
        wb.undeploy("tabular")


def test_serve_passes_the_tls_settings_through(tls_cluster: str, certificates: dict[str, str], demo_home: Path,
                                                tmp_path: Path) -> None:
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "serve", "tabular", "--port", "0", "--no-dashboard",
             "--scheduler", tls_cluster, "--tls-ca-file", certificates["ca"], "--tls-cert", certificates["cert"],
             "--tls-key", certificates["key"]],
            env={**os.environ, "WORKBENCH_HOME": str(demo_home)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        def url() -> str | None:
            for line in (tmp_path / "serve.log").read_text(errors="replace").splitlines():
                if line.startswith("Inference Workbench serving"):
                    return line.split(" at ", 1)[1].split(" ", 1)[0]
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            return None

        eventually(lambda: url() is not None, what="the server's ready line")
        base = url()
        body = {"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32",
                            "data": np.nan_to_num(load_tabular_data().x_test[0]).tolist()}]}
        answer = httpx.post(f"{base}/v2/models/tabular/infer", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["name"] == "label"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)
