"""The token over real HTTP: the control API needs it, inference only when asked, and beyond loopback it is never off.

``workbench serve --host 0.0.0.0`` (or ``--protect-inference``) without a token
makes one and prints it; the command is run as a user runs it and stopped with
SIGINT, as Ctrl-C stops it. ``test_access.py`` walks the whole route table.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO

import httpx
import pytest
from servers import serving
from waiting import free_port

from workbench.serving.app import ServeConfig, is_loopback

TOKEN = "correct-horse-battery-staple"
INFER = "/v2/models/tabular/infer"
ROW = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": [0.5] * 30}]}
#: How long the command may take to print its lines, and then to stop after SIGINT.
START_S, STOP_S = 120.0, 60.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json() == {"error": "a valid token is required: send 'Authorization: Bearer <token>'"}
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.fixture(scope="module")
def guarded(demo_home: object) -> Iterator[httpx.Client]:
    """A server whose control API needs ``TOKEN``."""
    with serving(ServeConfig(token=TOKEN), pipelines=["tabular"]) as served, \
            httpx.Client(base_url=served.url, timeout=60.0) as client:
        yield client


@pytest.fixture(scope="module")
def locked(demo_home: object) -> Iterator[httpx.Client]:
    """A server whose control API and inference both need ``TOKEN``."""
    with serving(ServeConfig(token=TOKEN, protect_inference=True), pipelines=["tabular"]) as served, \
            httpx.Client(base_url=served.url, timeout=60.0) as client:
        yield client


# -- control API ------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {}, bearer("wrong"), bearer(TOKEN + "x"), bearer(TOKEN[:-1]), {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN}, {"Authorization": "Bearer"}, {"X-Token": TOKEN},
], ids=["none", "wrong", "longer", "shorter", "basic", "no-scheme", "no-value", "other-header"])
def test_the_control_api_needs_the_token(guarded: httpx.Client, headers: dict[str, str]) -> None:
    assert_refused(guarded.get("/api/pipelines", headers=headers))
    assert_refused(guarded.get("/api/cluster", headers=headers))
    assert_refused(guarded.put("/api/pipelines/tabular/batching", json={"max_batch_size": 4}, headers=headers))


def test_a_refused_call_changes_nothing(guarded: httpx.Client) -> None:
    assert_refused(guarded.post("/api/pipelines", json={"target": "text"}))
    assert_refused(guarded.delete("/api/pipelines/tabular"))
    pipelines = guarded.get("/api/pipelines", headers=bearer(TOKEN))
    assert pipelines.status_code == 200, pipelines.text
    assert [p["name"] for p in pipelines.json()] == ["tabular"]


def test_the_token_opens_the_control_api(guarded: httpx.Client) -> None:
    answer = guarded.get("/api/pipelines", headers=bearer(TOKEN))
    assert answer.status_code == 200 and answer.json()[0]["name"] == "tabular"
    # NOTE: the scheme is case-insensitive (RFC 7235); the token is not.
    assert guarded.get("/api/pipelines", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    assert_refused(guarded.get("/api/pipelines", headers=bearer(TOKEN.upper())))
    changed = guarded.put("/api/pipelines/tabular/batching", json={"max_batch_size": 4}, headers=bearer(TOKEN))
    assert changed.status_code == 200 and changed.json()["batching"]["max_batch_size"] == 4


def test_inference_stays_open_unless_protected(guarded: httpx.Client) -> None:
    assert guarded.get("/v2/health/ready").status_code == 200
    assert guarded.get("/v2/models/tabular").status_code == 200
    answer = guarded.post(INFER, json=ROW)
    assert answer.status_code == 200, answer.text
    assert guarded.post(INFER, json=ROW, headers=bearer("wrong")).status_code == 200


# -- protect_inference ------------------------------------------------------------------
def test_protected_inference_needs_the_token(locked: httpx.Client) -> None:
    for method, path in (("GET", "/v2"), ("GET", "/v2/models/tabular"), ("GET", "/v2/models/tabular/ready"),
                         ("POST", "/v2/repository/index"), ("GET", "/api/pipelines")):
        assert_refused(locked.request(method, path))
    assert_refused(locked.post(INFER, json=ROW))
    assert_refused(locked.post(INFER, json=ROW, headers=bearer("wrong")))
    answer = locked.post(INFER, json=ROW, headers=bearer(TOKEN))
    assert answer.status_code == 200, answer.text
    assert locked.get("/api/pipelines", headers=bearer(TOKEN)).status_code == 200


def test_an_unknown_model_is_refused_before_it_is_looked_up(locked: httpx.Client) -> None:
    # NOTE: without the token, nothing is told about what is deployed.
    assert_refused(locked.post("/v2/models/no-such-model/infer", json=ROW))


# -- workbench serve beyond loopback ----------------------------------------------------
def _reader(stream: IO[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The lines of ``stream`` as they come, read by a thread (which ends at the end of the stream)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return lines, thread


@pytest.mark.parametrize(("host", "flags", "first_line", "inference_open"), [
    ("0.0.0.0", [], r"bound beyond loopback: the control API needs 'Authorization: Bearer (\S+)'\n", True),
    ("127.0.0.1", ["--protect-inference"],
     r"inference protected: every route but the health probes needs 'Authorization: Bearer (\S+)'\n", False),
], ids=["beyond-loopback", "protect-inference"])
def test_serve_generates_a_token_when_one_is_needed_and_prints_it(demo_home: object, host: str, flags: list[str],
                                                                  first_line: str, inference_open: bool) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_TOKEN"}
    env.update(WORKBENCH_HOME=str(demo_home), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "workbench.cli", "serve", "tabular", "--host", host, "--port", str(port),
               "--inprocess", "--no-dashboard", *flags]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stderr is not None
        out, reader = _reader(process.stdout)
        try:
            first = out.get(timeout=START_S)
            match = re.fullmatch(first_line, first)
            assert match, first
            token = match[1]
            assert len(token) >= 32
            serving_line = out.get(timeout=START_S)
            assert serving_line.startswith(f"Inference Workbench serving tabular at http://{host}:{port}"), \
                serving_line
            assert token not in serving_line

            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
                assert_refused(client.get("/api/pipelines"))
                assert_refused(client.post("/v2/repository/models/tabular/unload"))
                assert client.get("/api/pipelines", headers=bearer(token)).status_code == 200
                answer = client.post(INFER, content=json.dumps(ROW))
                if inference_open:
                    assert answer.status_code == 200, answer.text
                else:
                    assert_refused(answer)
                    assert client.get("/v2/health/ready").status_code == 200
                    answer = client.post(INFER, content=json.dumps(ROW), headers=bearer(token))
                    assert answer.status_code == 200, answer.text
        finally:
            process.send_signal(signal.SIGINT)
            try:
                code = process.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
            finally:
                reader.join(STOP_S)
        stderr = process.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr


# -- is_loopback ------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("10.0.0.1", False), ("::ffff:10.0.0.1", False),
    ("fe80::1", False), ("example.com", False), ("localhost.example.com", False), ("", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected
