"""HTTP load test of ``workbench serve`` on loopback, beside the ceiling of its HTTP stack, a naive server and raw ORT.

Started in the same run, one uvicorn process each, with the same uvicorn settings
(:func:`workbench.serving.server.uvicorn_config`):

- ``workbench serve tabular text embed`` (a LocalCluster of its own by default;
  ``--inprocess`` or ``--workers N``);
- a bare Starlette app whose infer route parses the same JSON body (``orjson.loads``, a check
  that it has ``inputs``) and returns a fixed V2 answer: the most requests/s this stack gives
  on this machine, the ceiling every tabular figure is divided by (FastAPI's routing alone
  would halve it);
- a naive FastAPI server, what one writes without a serving framework: each request's V2 JSON
  parsed into a numpy array, the tabular pipeline's pre-processing in numpy and one
  ``InferenceSession.run`` of the same model file per request, on the event loop, a V2 JSON
  answer (``benchmarks/peers/peer_models.py``, parameters read from the pipeline file).

In this process: raw ``InferenceSession.run`` of the pipelines' models on inputs prepared
beforehand (tokenised; imputed and scaled), at the best batch size and the better of two
layouts: the pipeline's own sessions using every core, or one single-threaded session per
core run side by side (as the Dask workers run them). The servers idle meanwhile.

Load: ``wrk -t1`` with a Lua script that rotates V2 JSON bodies (``--latency`` gives the
percentiles) when ``wrk`` is on the PATH, else a keep-alive HTTP/1.1 client on raw
asyncio streams in this process (uvloop when installed). The ``embed`` comparison of
JSON and binary outputs (384 floats per text) always uses that client: the two kinds
alternate request by request on every connection and every answer is decoded into a
float32 array, as a client must; the in-process cost of encoding plus decoding one
answer is printed too. Each row also gives the CPU time the server (and its Dask
workers) spent per request, the figure least disturbed by other work on the machine.

Isolation: tabular at a light load (``--light`` connections, one row per request) alone, then
the same while a second load generator (a process of its own, the asyncio client) saturates
the text pipeline of the same server (``--heavy`` connections, one sentence per request); the
heavy load starts first and ends after the light one. The figure is tabular's p99 with text
saturated over its p99 alone, both measured in the same round.

Goals: tabular >= 0.6x the Starlette ceiling's requests/s (32 connections); tabular's p50 at
one connection <= 3x the ceiling's; tabular's p99 beside saturated text <= 2x its p99 alone;
text >= 0.9x the raw ORT items/s at 128 connections (one sentence per request: that saturates
the workers; 32 connections are printed too); binary embedding outputs faster than JSON.
Every figure is measured once per round and the rounds alternate the order of the sides
compared, so drift on a shared machine hits both alike; ratios are taken within a round.

Run: ``python benchmarks/bench_http.py [--seconds S] [--rounds R] [--inprocess | --workers N]
[--client auto|wrk|python] [--embed-texts N] [--light C] [--heavy C]``. The peers (MLServer,
Ray Serve) are compared in ``benchmarks/peers/bench_peers.py`` (their virtualenvs: ``make peers``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import psutil
import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.applications import Starlette
from starlette.routing import Route

from workbench.serving.server import uvicorn_config

HOST = "127.0.0.1"
INFER = "/v2/models/{}/infer"
BENCHMARKS = Path(__file__).resolve().parent
#: What the bare endpoint answers (a tabular answer of the same size as the real one).
_FIXED_ANSWER = orjson.dumps({
    "model_name": "tabular", "model_version": "gbt", "id": "0" * 32,
    "outputs": [{"name": "label", "datatype": "BYTES", "shape": [1], "data": ["benign"]},
                {"name": "probability", "datatype": "FP32", "shape": [1], "data": [0.99976236]},
                {"name": "risk_bucket", "datatype": "BYTES", "shape": [1], "data": ["low"]},
                {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.00023764, 0.99976236]}],
})
_NO_INPUTS = orjson.dumps({"error": "the request needs a non-empty 'inputs' list"})
_READY = orjson.dumps({"ready": True})


# -- the baseline servers (each run in its own process: --bare-server, --naive-server) ----------
def bare_server(port: int) -> None:
    """Starlette + uvicorn with the server's settings: parse the body, answer a fixed V2 body."""

    async def infer(request: Any) -> Response:
        body = orjson.loads(await request.body())
        if not isinstance(body, dict) or not body.get("inputs"):
            return Response(_NO_INPUTS, status_code=400, media_type="application/json")
        return Response(_FIXED_ANSWER, media_type="application/json")

    async def ready(request: Any) -> Response:
        return Response(_READY, media_type="application/json")

    app = Starlette(routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"]),
                            Route("/v2/health/ready", ready)])
    uvicorn.Server(uvicorn_config(app, HOST, port)).run()


def naive_server(port: int, spec_file: Path) -> None:
    """FastAPI + uvicorn with the server's settings, one model run per request, no batching."""
    sys.path.insert(0, str(BENCHMARKS / "peers"))
    from peer_models import Tabular, Text, v2_outputs

    spec = json.loads(spec_file.read_text())
    models: dict[str, Any] = {"tabular": Tabular(spec["tabular"]), "text": Text(spec["text"])}
    app = FastAPI()

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        body = orjson.loads(await request.body())
        if name not in models:
            return Response(orjson.dumps({"error": f"no model {name!r}"}), 404, media_type="application/json")
        first = body["inputs"][0]
        if name == "tabular":
            outputs = models[name].predict(np.asarray(first["data"], dtype=np.float32).reshape(first["shape"]))
        else:
            outputs = models[name].predict(first["data"])
        answer = {"model_name": name, "outputs": v2_outputs(outputs)}
        return Response(orjson.dumps(answer), media_type="application/json")

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    uvicorn.Server(uvicorn_config(app, HOST, port)).run()


def baseline_spec() -> dict[str, Any]:
    """The model files and parameters of the workbench's tabular and text pipelines, for ``peer_models``.

    Read from the pipeline files (``$WORKBENCH_HOME/pipelines``) and their model repository.
    """
    import yaml

    from workbench.demo import demo_pipeline_path
    from workbench.models import ModelRepository

    def load(name: str) -> tuple[ModelRepository, dict[str, dict[str, Any]]]:
        path = demo_pipeline_path(name)
        document = yaml.safe_load(path.read_text())
        repository = ModelRepository((path.parent / document["repository"]).resolve())
        return repository, {stage["name"]: stage for stage in document["stages"]}

    repository, stages = load("tabular")
    tabular = {
        "model": str(repository.path(stages["model"]["model"], stages["model"]["variant"])),
        "impute": stages["impute"]["values"], "lower": stages["clip"]["lower"], "upper": stages["clip"]["upper"],
        "mean": stages["standardize"]["mean"], "scale": stages["standardize"]["scale"],
        "labels": stages["label"]["labels"], "edges": stages["risk"]["edges"], "buckets": stages["risk"]["labels"],
        "bucket_column": stages["risk"].get("column", 0),
    }
    repository, stages = load("text")
    text = {
        "tokenizer": str(repository.asset(stages["tokenize"]["tokenizer"])),
        "max_length": stages["tokenize"].get("max_length", 256),
        "encoder": str(repository.path(stages["encoder"]["model"], stages["encoder"]["variant"])),
        "head": str(repository.path(stages["head"]["model"], stages["head"]["variant"])),
        "labels": stages["label"]["labels"],
    }
    return {"tabular": tabular, "text": text}


# -- processes ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _process(command: list[str], port: int, log: Path, ready_s: float = 180.0,
             env: dict[str, str] | None = None) -> Iterator[int]:
    """Run a server until the block ends; wait for ``/v2/health/ready`` first. Yields its process id.

    On the way out: SIGINT, then whatever of its descendants outlived it is ended too, by process id.
    """
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{command[:3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://{HOST}:{port}/v2/health/ready", timeout=2) as reply:
                if reply.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[:3]} not ready after {ready_s:g} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc.pid
    finally:
        descendants: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _, alive = psutil.wait_procs(descendants, timeout=10)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()


# -- load generators ----------------------------------------------------------------------
@dataclass
class Load:
    """One measurement: requests per second, latency percentiles, and failed requests."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float = float("nan")
    """CPU time of the server and its children (Dask workers) per request, in microseconds."""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk(port: int, path: str, bodies: Sequence[bytes], connections: int, seconds: float, work: Path) -> Load:
    """``wrk -t1 -cN --latency`` POSTing the bodies in turn (one per line of a file the Lua script reads)."""
    bodies_file = write_bodies(bodies, work)
    script = work / "post.lua"
    script.write_text(f"""
local requests = {{}}
local i = 0
-- NOTE: wrk.format needs the Host header, which wrk sets just before it calls init.
function init(args)
  for body in io.lines("{bodies_file}") do
    requests[#requests + 1] = wrk.format("POST", "{path}", {{["Content-Type"] = "application/json"}}, body)
  end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
""")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script),
                          f"http://{HOST}:{port}{path}"], capture_output=True, text=True, check=True).stdout

    def latency(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if found is None:
            raise RuntimeError(f"no {label}% latency in wrk's output:\n{out}")
        return float(found[1]) * _UNITS[found[2]]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad[1]) if bad else 0) + (sum(int(n) for n in sockets.groups()) if sockets else 0)
    return Load(float(rps[1]), latency("50"), latency("99"), int(total[1]), errors)


def _http_post(path: str, body: bytes, port: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


Check = Callable[[dict[bytes, bytes], bytes], object]


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        headers[key.strip().lower()] = value.strip()
    # NOTE: uvicorn sends a Content-Length for every Response with a body (no chunked answers here).
    return status, headers, await reader.readexactly(int(headers[b"content-length"]))


async def _drive(port: int, path: str, bodies: Sequence[bytes], connections: int, seconds: float,
                 check: Check | None, kinds: Sequence[str] | None = None,
                 started: Callable[[], object] | None = None) -> dict[str, Load]:
    """Keep-alive connections, each with one request outstanding at a time, for ``seconds``.

    Each connection sends the bodies in turn. With ``kinds`` (one per body, alternating), the kinds
    alternate request by request on every connection, so they share whatever else the machine does;
    each kind then gets its own figures, its rate by Little's law (connections / mean latency).
    ``started`` is called once every connection is open, as the clock starts.
    """
    raw = [_http_post(path, body, port) for body in bodies]
    labels = list(kinds) if kinds is not None else ["all"] * len(bodies)
    streams = [await asyncio.open_connection(HOST, port) for _ in range(connections)]
    if started is not None:
        started()
    latencies: dict[str, list[float]] = {label: [] for label in labels}
    errors = dict.fromkeys(labels, 0)
    clock = time.perf_counter
    began = clock()
    stop = began + seconds

    async def connection(index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        turn = index
        while clock() < stop:
            label = labels[turn % len(raw)]
            sent = clock()
            writer.write(raw[turn % len(raw)])
            turn += 1
            status, headers, body = await _answer(reader)
            if status != 200:
                errors[label] += 1
            elif check is not None:
                check(headers, body)
            latencies[label].append(clock() - sent)
        writer.close()

    await asyncio.gather(*(connection(i, r, w) for i, (r, w) in enumerate(streams)))
    elapsed = clock() - began
    results = {}
    for label, samples in latencies.items():
        p50, p99 = np.percentile(samples, [50, 99]) * 1e3
        rate = len(samples) / elapsed if kinds is None else connections / float(np.mean(samples))
        results[label] = Load(rate, float(p50), float(p99), len(samples), errors[label])
    return results


def _run_async(coroutine: Coroutine[Any, Any, dict[str, Load]]) -> dict[str, Load]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (a server and its Dask workers)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def write_bodies(bodies: Sequence[bytes], work: Path) -> Path:
    """The bodies in a file, one per line (JSON from orjson has no raw newline), for another process to send."""
    path = work / f"bodies-{abs(hash(tuple(bodies)))}.txt"
    if not path.exists():
        path.write_bytes(b"\n".join(bodies) + b"\n")
    return path


def drive_main(job: dict[str, Any]) -> None:
    """``--drive``: one load of the asyncio client; prints ``started`` once connected, then the Load as JSON."""
    bodies = Path(job["bodies"]).read_bytes().splitlines()
    result = _run_async(_drive(job["port"], job["path"], bodies, job["connections"], job["seconds"], None,
                               started=lambda: print("started", flush=True)))["all"]
    print(json.dumps(asdict(result)), flush=True)


class Background:
    """A load in a process of its own (``--drive``) for ``seconds``, beside what this process measures meanwhile.

    The block is entered once its connections are open; on the way out it waits for the load to end.
    A process, not a thread: the two load generators must not share one interpreter's lock.
    """

    def __init__(self, port: int, path: str, bodies_file: Path, connections: int, seconds: float) -> None:
        job = {"port": port, "path": path, "bodies": str(bodies_file), "connections": connections,
               "seconds": seconds}
        self.seconds = seconds
        self.proc = subprocess.Popen([sys.executable, __file__, "--drive", json.dumps(job)],
                                     stdout=subprocess.PIPE, text=True)
        self.result = Load(float("nan"), float("nan"), float("nan"), 0, 0)

    def __enter__(self) -> Background:
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "started":
            self.proc.wait(30)
            raise RuntimeError(f"the background load did not start (exit {self.proc.returncode})")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        if self.proc.returncode == 0:
            self.result = Load(**json.loads(out.strip().splitlines()[-1]))
        elif exc == (None, None, None):
            raise RuntimeError(f"the background load failed (exit {self.proc.returncode})")


class Loader:
    """Runs one measurement with wrk or with the asyncio client; counts the server's CPU time meanwhile.

    CPU time per request is the figure least disturbed by other work on a shared machine.
    """

    def __init__(self, use_wrk: bool, work: Path, pids: dict[int, int]) -> None:
        self.use_wrk = use_wrk
        self.work = work
        self.pids = pids

    def __call__(self, port: int, path: str, bodies: Sequence[bytes], connections: int, seconds: float,
                 client: str | None = None) -> Load:
        before = _cpu_s(self.pids[port])
        if self.use_wrk and client != "python":
            result = _wrk(port, path, bodies, connections, seconds, self.work)
        else:
            result = _run_async(_drive(port, path, bodies, connections, seconds, None))["all"]
        result.cpu_us = (_cpu_s(self.pids[port]) - before) / max(result.requests, 1) * 1e6
        return result

    def interleaved(self, port: int, path: str, bodies: Sequence[bytes], kinds: Sequence[str], connections: int,
                    seconds: float, check: Check) -> dict[str, Load]:
        """Kinds of request alternating on every connection (asyncio client); CPU per request of all of them."""
        before = _cpu_s(self.pids[port])
        results = _run_async(_drive(port, path, bodies, connections, seconds, check, kinds))
        cpu_us = (_cpu_s(self.pids[port]) - before) / max(sum(r.requests for r in results.values()), 1) * 1e6
        for result in results.values():
            result.cpu_us = cpu_us
        return results


# -- request bodies -------------------------------------------------------------------------
def _v2_body(name: str, datatype: str, shape: list[int], data: list[Any], **parameters: Any) -> bytes:
    body: dict[str, Any] = {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}
    if parameters:
        body["parameters"] = parameters
    return orjson.dumps(body)


def tabular_bodies(rows: np.ndarray) -> list[bytes]:
    # NOTE: strict JSON has no NaN (orjson writes null): the rows with missing values are left out.
    complete = rows[~np.isnan(rows).any(axis=1)][:64]
    return [_v2_body("features", "FP32", [1, rows.shape[1]], row.tolist()) for row in complete]


def text_bodies(sentences: Sequence[str], per_request: int = 1, **parameters: Any) -> list[bytes]:
    groups = [list(sentences[i:i + per_request]) for i in range(0, len(sentences) - per_request + 1, per_request)]
    return [_v2_body("text", "BYTES", [per_request], group, **parameters) for group in groups]


def decode_embeddings(headers: dict[bytes, bytes], body: bytes) -> np.ndarray:
    """The answer's embeddings as a float32 array, from JSON or binary outputs, as a client decodes them."""
    split = headers.get(b"inference-header-content-length")
    if split is not None:
        output = orjson.loads(body[:int(split)])["outputs"][0]
        array = np.frombuffer(body, dtype="<f4", count=output["parameters"]["binary_data_size"] // 4,
                              offset=int(split))
    else:
        output = orjson.loads(body)["outputs"][0]
        array = np.asarray(output["data"], dtype=np.float32)
    if array.size != int(np.prod(output["shape"])) or output["shape"][-1] != 384:
        raise RuntimeError(f"unexpected embedding output: {output['shape']}")
    return array.reshape(output["shape"])


def codec_costs(texts: int) -> dict[str, tuple[int, float]]:
    """Bytes of an embed answer, and µs to encode it (server) plus decode it (client), JSON and binary."""
    from workbench.serving.codec import encode_response

    embeddings = np.random.default_rng(0).standard_normal((texts, 384)).astype(np.float32)
    costs = {}
    for kind, binary in (("JSON", False), ("binary", True)):
        def round_trip(binary: bool = binary) -> int:
            body, split = encode_response("embed", "fp32", "0" * 32, {"embedding": embeddings}, binary,
                                          {"timings_ms": {"tokenize": 0.1, "encoder": 5.0}})
            headers = {b"inference-header-content-length": str(split).encode()} if split is not None else {}
            decode_embeddings(headers, body)
            return len(body)

        size = round_trip()
        repeat = max(10, 20000 // texts)
        seconds = min(timeit.repeat(round_trip, number=repeat, repeat=5)) / repeat
        costs[kind] = (size, seconds * 1e6)
    return costs


# -- raw ONNX Runtime -------------------------------------------------------------------------
Chain = list[tuple[Any, Callable[..., Any]]]


def _chains(pipeline: Any, layout: str) -> list[Chain]:
    """The pipeline's model sessions, as many chains as threads will run them.

    ``"shared"``: the pipeline's own sessions (ONNX Runtime's threads over every core), run by one
    thread; ``"per-core"``: one single-threaded session of each model per core, each chain run by its
    own thread, as the Dask workers run them. Both are tried: the best is the ceiling.
    """
    from workbench.pipeline import OnnxStage

    stages = [s for s in pipeline.inference_stages if isinstance(s, OnnxStage)]
    if layout == "shared":
        return [[(stage, stage.run) for stage in stages]]
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    chains = []
    for _ in range(os.cpu_count() or 1):
        chain: Chain = []
        for stage in stages:
            assert stage.loaded is not None and stage.signature is not None
            session = ort.InferenceSession(str(stage.loaded.path), options, providers=["CPUExecutionProvider"])
            names = ([spec.name for spec in stage.signature.inputs], [spec.name for spec in stage.signature.outputs])

            def run(*arrays: np.ndarray, session: Any = session, names: Any = names) -> Any:
                return session.run(names[1], dict(zip(names[0], arrays)))

            chain.append((stage, run))
        chains.append(chain)
    return chains


def _wrap(values: np.ndarray, start: int, count: int) -> np.ndarray:
    """``count`` rows from ``start`` on, going round to the first row after the last."""
    return values.take(range(start, start + count), axis=0, mode="wrap")


class Raw:
    """Raw ORT items/s of a pipeline's models by batch size and layout, on inputs prepared beforehand."""

    def __init__(self, pipeline: Any, make: Callable[[int, int], dict[str, Any]]) -> None:
        self.pipeline, self.make = pipeline, make
        self._chains: dict[str, list[Chain]] = {}
        self._prepared: dict[int, list[dict[str, np.ndarray]]] = {}

    def rate(self, batch: int, layout: str, seconds: float) -> float:
        if layout not in self._chains:
            self._chains[layout] = _chains(self.pipeline, layout)
        if batch not in self._prepared:
            first = self.pipeline.inference_stages[0]
            self._prepared[batch] = [self.pipeline.predict(self.make(i * batch, batch), outputs=list(first.inputs))
                                     .outputs for i in range(16)]
        prepared, chains = self._prepared[batch], self._chains[layout]

        def run_chain(index: int, turn: int) -> None:
            env = dict(prepared[(index + turn) % len(prepared)])
            for stage, run in chains[index]:
                env.update(zip(stage.outputs, run(*[env[n] for n in stage.inputs])))

        def loop(index: int) -> int:
            # NOTE: session.run releases the GIL: the chains run in parallel, as the workers' sessions do.
            calls = 0
            while time.perf_counter() < stop:
                run_chain(index, calls)
                calls += 1
            return calls

        for index in range(len(chains)):
            run_chain(index, 0)  # NOTE: the first run of a session is slower; it is not counted
        began = time.perf_counter()
        stop = began + seconds
        with ThreadPoolExecutor(len(chains)) as pool:
            calls = sum(pool.map(loop, range(len(chains))))
        return calls * batch / (time.perf_counter() - began)

    def best(self, batches: Sequence[int], seconds: float) -> tuple[tuple[int, str], dict[tuple[int, str], float]]:
        rates = {(b, layout): self.rate(b, layout, seconds) for b in batches for layout in ("shared", "per-core")}
        return max(rates, key=lambda key: rates[key]), rates


# -- the run --------------------------------------------------------------------------------
def _median(values: Sequence[float]) -> float:
    return float(np.median(values))


def _conns(count: int) -> str:
    return f"{count} conn{'s' if count > 1 else ''}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass
class Bodies:
    """The request bodies of each measurement."""

    tabular: list[bytes]
    text: list[bytes]
    embed: list[bytes]
    """JSON-output and binary-output requests, alternating."""
    embed_kinds: list[str]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement (alternating order)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--inprocess", action="store_true", help="serve with --inprocess (no Dask)")
    mode.add_argument("--workers", type=int, default=2, help="LocalCluster workers of the server")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                        help="load generator: wrk when on the PATH (auto), or the asyncio client")
    parser.add_argument("--embed-texts", type=int, default=1, help="texts per embed request")
    parser.add_argument("--light", type=int, default=4, help="isolation: connections of the light tabular load")
    parser.add_argument("--heavy", type=int, default=128, help="isolation: connections saturating text beside it")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--naive-server", nargs=2, metavar=("PORT", "SPEC"), help=argparse.SUPPRESS)
    parser.add_argument("--drive", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server)
        return
    if args.naive_server:
        naive_server(int(args.naive_server[0]), Path(args.naive_server[1]))
        return
    if args.drive:
        drive_main(json.loads(args.drive))
        return

    from workbench.demo import build_demo_models, demo_pipeline
    from workbench.demo.corpus import topic_sentences
    from workbench.demo.tabular import load_tabular_data

    build_demo_models(log=lambda _: None)
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)
    if use_wrk and shutil.which("wrk") is None:
        parser.error("--client wrk: wrk is not on the PATH")
    rows = load_tabular_data().x_test.astype(np.float32)
    sentences = topic_sentences("test")[0]
    embed_json = text_bodies(sentences, args.embed_texts)
    embed_binary = text_bodies(sentences, args.embed_texts, binary_data_output=True)
    bodies = Bodies(tabular_bodies(rows), text_bodies(sentences),
                    [body for pair in zip(embed_json, embed_binary) for body in pair],
                    ["JSON", "binary"] * len(embed_json))
    text_array = np.array(sentences, dtype=object)
    raw = {
        "tabular": Raw(demo_pipeline("tabular"), lambda s, b: {"features": _wrap(rows, s, b)}),
        "text": Raw(demo_pipeline("text"), lambda s, b: {"text": _wrap(text_array, s, b)}),
    }
    served = ["--inprocess"] if args.inprocess else ["--workers", str(args.workers)]
    backend = "in-process" if args.inprocess else f"LocalCluster, {args.workers} workers x 1 thread"
    print(machine_line())
    client = "wrk -t1, a Lua script rotating JSON bodies" if use_wrk else "asyncio streams, HTTP/1.1 keep-alive"
    print(f"# load: {client}; embed JSON vs binary outputs: asyncio streams client, the two alternating request "
          "by request on every connection, every answer decoded to float32")
    print(f"# workbench serve tabular text embed ({backend}), the bare Starlette endpoint (the ceiling) and the "
          "naive FastAPI server (one session.run per request): one uvicorn process each, same settings; "
          f"{args.seconds:g} s per measurement, {args.rounds} rounds, alternating")
    print(f"# isolation: tabular at {_conns(args.light)} alone, then beside text saturated by {_conns(args.heavy)} "
          "(one sentence each) from a second load generator process, against the same server")
    for texts in sorted({1, args.embed_texts, 32}):
        costs = codec_costs(texts)
        print(f"# embed answer of {texts} text{'s' if texts > 1 else ''}, in-process server encode + client decode: "
              + ", ".join(f"{kind} {size / 1024:.1f} KiB {us:.0f} us" for kind, (size, us) in costs.items()))

    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        work = Path(tmp)
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(baseline_spec()))
        ports = Ports(_free_port(), _free_port(), _free_port())
        wb_cmd = [sys.executable, "-m", "workbench.cli", "serve", "tabular", "text", "embed", "--port",
                  str(ports.workbench), *served]
        bare_cmd = [sys.executable, __file__, "--bare-server", str(ports.bare)]
        naive_cmd = [sys.executable, __file__, "--naive-server", str(ports.naive), str(spec_file)]
        with _process(wb_cmd, ports.workbench, work / "serve.log") as wb_pid, \
                _process(bare_cmd, ports.bare, work / "bare.log") as bare_pid, \
                _process(naive_cmd, ports.naive, work / "naive.log") as naive_pid:
            load = Loader(use_wrk, work, {ports.workbench: wb_pid, ports.bare: bare_pid, ports.naive: naive_pid})
            run_rounds(args, load, ports, raw, bodies)


def machine_line() -> str:
    stack = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m)]
    return (f"# machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
            f"onnxruntime {ort.__version__}, uvicorn {uvicorn.__version__} ({', '.join(stack) or 'asyncio, h11'})")


@dataclass
class Ports:
    workbench: int
    bare: int
    naive: int


class Table:
    """Rows as they are measured, then medians over the rounds and the ratios against the goals."""

    def __init__(self) -> None:
        self.results: dict[tuple[str, int], list[Load]] = {}
        self.ratios: dict[str, list[float]] = {}
        header = (f"{'round':>5}  {'measurement':<52} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'CPU us/req':>10} {'errors':>6}")
        print("\n" + header + "\n" + "-" * len(header))

    def show(self, index: int, label: str, conns: int, result: Load) -> Load:
        self.results.setdefault((label, conns), []).append(result)
        print(f"{index:>5}  {label:<52} {conns:>5} {result.rps:>9.0f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f} "
              f"{_cpu(result.cpu_us)} {result.errors:>6}", flush=True)
        return result

    def raw(self, index: int, label: str, rate: float) -> float:
        self.results.setdefault((label, 0), []).append(Load(rate, float("nan"), float("nan"), 0, 0))
        print(f"{index:>5}  {label:<52} {'-':>5} {rate:>9.0f}", flush=True)
        return rate

    def ratio(self, key: str, value: float) -> None:
        self.ratios.setdefault(key, []).append(value)

    def summary(self, rounds: int, goals: dict[str, tuple[str, Callable[[float], bool]]]) -> None:
        print(f"\nmedians over {rounds} rounds")
        print(f"{'measurement':<59} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10}")
        for (label, conns), loads in self.results.items():
            rate = _median([r.rps for r in loads])
            if not conns:
                print(f"{label:<59} {'-':>5} {rate:>9.0f}")
                continue
            p50, p99, cpu = (_median([getattr(r, key) for r in loads]) for key in ("p50_ms", "p99_ms", "cpu_us"))
            print(f"{label:<59} {conns:>5} {rate:>9.0f} {p50:>8.2f} {p99:>8.2f} {_cpu(cpu)}")
        print("\nratios (each round's, then their median)")
        for key, values in self.ratios.items():
            each = " / ".join(f"{v:.3f}" for v in values)
            goal = goals.get(key)
            verdict = f"  ({goal[0]}: {_verdict(goal[1](_median(values)))})" if goal else ""
            print(f"  {key:<56} {each:<26} median {_median(values):.3f}{verdict}")
        failed = sum(r.errors for loads in self.results.values() for r in loads)
        if failed:
            print(f"\nWARNING: {failed} requests failed (non-2xx or socket errors); their figures are not valid")


def _cpu(us: float) -> str:
    return f"{'-':>10}" if np.isnan(us) else f"{us:>10.0f}"


def run_rounds(args: argparse.Namespace, load: Loader, ports: Ports, raw: dict[str, Raw], bodies: Bodies) -> None:
    seconds = args.seconds
    wb_port = ports.workbench
    tab_path, text_path, embed_path = INFER.format("tabular"), INFER.format("text"), INFER.format("embed")
    text_file = write_bodies(bodies.text, load.work)
    # NOTE: warm the servers (sessions, the batchers' arrival estimates), then find the raw ceilings.
    for port, path, warm in ((ports.bare, tab_path, bodies.tabular), (ports.naive, tab_path, bodies.tabular),
                             (wb_port, tab_path, bodies.tabular), (wb_port, text_path, bodies.text),
                             (wb_port, embed_path, bodies.embed)):
        load(port, path, warm, 8, 1.0, client="python")
    (tab_batch, tab_layout), tab_rates = raw["tabular"].best((1, 32, 256, 1024), max(seconds / 8, 0.5))
    (text_batch, text_layout), text_rates = raw["text"].best((1, 8, 16, 32, 64), max(seconds / 4, 1.0))
    for name, rates in (("tabular", tab_rates), ("text", text_rates)):
        print(f"# raw ORT {name} items/s by batch, layout: "
              + ", ".join(f"{b} {layout}: {v:.0f}" for (b, layout), v in rates.items()))

    table = Table()
    embed_label = f"embed, {args.embed_texts} text{'s' if args.embed_texts > 1 else ''}/request"
    ceiling_label, naive_label, wb_label = ("bare Starlette endpoint (tabular body)",
                                            "naive FastAPI, one session.run/request", "workbench tabular")
    for index in range(1, args.rounds + 1):
        flip = index % 2 == 0
        for conns in (1, 32):
            sides = [(ceiling_label, ports.bare), (naive_label, ports.naive), (wb_label, wb_port)]
            got = {label: table.show(index, label, conns, load(port, tab_path, bodies.tabular, conns, seconds))
                   for label, port in (sides[::-1] if flip else sides)}
            tabular, naive, bare = got[wb_label], got[naive_label], got[ceiling_label]
            table.ratio(f"tabular / Starlette ceiling, {_conns(conns)}", tabular.rps / bare.rps)
            table.ratio(f"  naive FastAPI / Starlette ceiling, {_conns(conns)}", naive.rps / bare.rps)
            table.ratio(f"  tabular / naive FastAPI, {_conns(conns)}", tabular.rps / naive.rps)
            table.ratio(f"  tabular, by server CPU per request, {_conns(conns)}", bare.cpu_us / tabular.cpu_us)
            if conns == 1:
                table.ratio("tabular p50 / Starlette p50, 1 conn", tabular.p50_ms / bare.p50_ms)
                table.ratio("  naive FastAPI p50 / Starlette p50, 1 conn", naive.p50_ms / bare.p50_ms)
        table.raw(index, f"raw ORT tabular model, batch {tab_batch}, {tab_layout} (items/s)",
                  raw["tabular"].rate(tab_batch, tab_layout, seconds / 2))

        isolation: dict[str, Load] = {}
        for step in ("beside", "alone") if flip else ("alone", "beside"):
            if step == "alone":
                isolation[step] = table.show(index, "isolation: workbench tabular, alone", args.light,
                                             load(wb_port, tab_path, bodies.tabular, args.light, seconds, "python"))
                continue
            with Background(wb_port, text_path, text_file, args.heavy, seconds + 1.5) as heavy:
                time.sleep(1.0)  # NOTE: the text batcher fills up first; the heavy load ends 0.5 s after this one
                beside = load(wb_port, tab_path, bodies.tabular, args.light, seconds, "python")
            beside.cpu_us = float("nan")  # NOTE: the server's CPU went to both loads
            isolation[step] = table.show(index, "isolation: workbench tabular, text saturated beside", args.light,
                                         beside)
            table.show(index, "isolation: the text load beside it, 1 sentence/request", args.heavy, heavy.result)
        table.ratio(f"tabular p99 beside saturated text / alone, {_conns(args.light)}",
                    isolation["beside"].p99_ms / isolation["alone"].p99_ms)
        table.ratio(f"  same, p50, {_conns(args.light)}", isolation["beside"].p50_ms / isolation["alone"].p50_ms)

        texts = {}
        ceiling = 0.0
        # NOTE: 32 connections keep at most 32 sentences in flight, about 16 per batch over two workers; 128
        # saturate the workers, which is where the server's throughput is compared with the raw ceiling too.
        for step in ("raw", 128, 32, 1) if flip else (1, 32, 128, "raw"):
            if step == "raw":
                ceiling = table.raw(index, f"raw ORT text encoder+head, batch {text_batch}, {text_layout} (items/s)",
                                    raw["text"].rate(text_batch, text_layout, seconds))
            else:
                texts[step] = table.show(index, "workbench text, 1 sentence/request", int(step),
                                         load(wb_port, text_path, bodies.text, int(step), seconds))
        table.ratio("text / raw ORT at its best, 32 conns", texts[32].rps / ceiling)
        table.ratio("text / raw ORT at its best, 128 conns (saturated)", texts[128].rps / ceiling)
        for conns in (1, 32):
            got = load.interleaved(wb_port, embed_path, bodies.embed, bodies.embed_kinds, conns, 2 * seconds,
                                   decode_embeddings)
            for kind in ("JSON", "binary"):
                table.show(index, f"{embed_label}, {kind} outputs (rate: Little)", conns, got[kind])
            table.ratio(f"embed binary / JSON rate, {_conns(conns)}", got["binary"].rps / got["JSON"].rps)
            table.ratio(f"  embed JSON - binary p50 (ms), {_conns(conns)}", got["JSON"].p50_ms - got["binary"].p50_ms)

    table.summary(args.rounds, {
        "tabular / Starlette ceiling, 32 conns": ("goal >= 0.6", lambda v: v >= 0.6),
        "tabular p50 / Starlette p50, 1 conn": ("goal <= 3", lambda v: v <= 3.0),
        f"tabular p99 beside saturated text / alone, {_conns(args.light)}": ("goal <= 2", lambda v: v <= 2.0),
        "text / raw ORT at its best, 128 conns (saturated)": ("goal >= 0.9", lambda v: v >= 0.9),
        "embed binary / JSON rate, 1 conn": ("goal > 1", lambda v: v > 1.0),
        "embed binary / JSON rate, 32 conns": ("goal > 1", lambda v: v > 1.0),
    })


if __name__ == "__main__":
    main()
