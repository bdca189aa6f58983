"""The workbench beside what users would pick instead: MLServer and Ray Serve on the same model files, same load.

Servers, each started by this script, on loopback, one at a time (the others are stopped
meanwhile, so an idle Ray or Dask cluster takes no core from the one measured):

- ``workbench serve tabular text`` (``.venv``; a LocalCluster of ``--workers`` workers, or
  ``--inprocess``);
- MLServer 1.7.1 (``benchmarks/peers/.venv-mlserver``): a custom runtime per model
  (``mlserver_runtime.py``; MLServer has no ONNX runtime of its own), adaptive batching of at most
  32 requests or 5 ms, its other settings the defaults (one parallel inference worker process);
- Ray Serve 2.60 (``benchmarks/peers/.venv-ray``): one FastAPI-ingress deployment per model,
  ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)`` (``ray_app.py``);
- the naive FastAPI server of ``bench_http.py`` (one ``session.run`` per request, no batching);
- the bare Starlette endpoint of ``bench_http.py`` (parses the body, answers a fixed body): the
  HTTP stack's ceiling, tabular only.

Every peer runs the workbench's own model files (the tabular pipeline's gbt model; the text
pipeline's MiniLM fp32 encoder, tokenizer and nearest-centroid head) through ``peer_models.py``,
which writes the pipelines' pre- and post-processing out in numpy with the parameters read from
the pipeline files: every server gets the same raw V2 JSON bodies (tabular rows, one row per
request; one sentence per request) and does the same work for them. Access logs are off in
every server, as in the workbench's.

Before it is measured, every server's answers are checked against a direct ONNX Runtime run of
the same rows (the workbench pipeline's own pre-processing, then the model files' sessions):
rows and sentences sent one by one, then all in one request; a mismatch stops the run.

Load: the asyncio client of ``bench_http.py`` (keep-alive HTTP/1.1, one request outstanding per
connection) at each offered load of ``--connections`` (1, 4, 16, 32), ``--seconds`` each, after a
warm-up. Printed: each row (req/s, p50, p99, the server's CPU per request), medians over the
rounds (the servers' order reversed every other round), each peer's ratios to the workbench at
each load, and a plot of p50 and p99 against throughput for every server (``--plot``, a PNG;
matplotlib from ``.venv`` when it has it, else from the Ray venv, where ``make peers`` puts it).

Set up the peers with ``make peers`` (never needed by ``make test``), then
``.venv/bin/python benchmarks/peers/bench_peers.py [--seconds S] [--rounds R]
[--connections 1,4,16,32] [--servers workbench,mlserver,ray,naive,starlette] [--models tabular,text]
[--workers N | --inprocess] [--plot PATH]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

PEERS = Path(__file__).resolve().parent
BENCHMARKS = PEERS.parent
sys.path.insert(0, str(BENCHMARKS))

import bench_http as bh  # noqa: E402  (the load generator, the servers' runner, the bodies, the baselines)

MLSERVER_VENV = PEERS / ".venv-mlserver"
RAY_VENV = PEERS / ".venv-ray"
SERVERS = ("workbench", "mlserver", "ray", "naive", "starlette")
LABELS = {"workbench": "workbench serve", "mlserver": "MLServer 1.7.1", "ray": "Ray Serve 2.60",
          "naive": "naive FastAPI", "starlette": "Starlette ceiling"}


# -- the servers ------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    command: list[str]
    models: tuple[str, ...]
    env: dict[str, str]
    ready_s: float = 180.0


def _mlserver_folder(work: Path, port: int, spec_file: Path) -> Path:
    """MLServer's settings and one model folder per model (adaptive batching: 32 requests or 5 ms)."""
    folder = work / "mlserver"
    folder.mkdir(exist_ok=True)
    # NOTE: debug off: MLServer's uvicorn writes an access log line per request in debug mode (its default).
    (folder / "settings.json").write_text(json.dumps({
        "debug": False, "host": bh.HOST, "http_port": port, "grpc_port": bh._free_port(),
        "metrics_port": bh._free_port()}))
    for model, runtime in (("tabular", "TabularRuntime"), ("text", "TextRuntime")):
        (folder / model).mkdir(exist_ok=True)
        (folder / model / "model-settings.json").write_text(json.dumps({
            "name": model, "implementation": f"mlserver_runtime.{runtime}", "max_batch_size": 32,
            "max_batch_time": 0.005, "parameters": {"uri": str(spec_file)}}))
    return folder


def server(name: str, port: int, work: Path, spec_file: Path, args: argparse.Namespace) -> Server:
    on_path = {"PYTHONPATH": str(PEERS)}
    if name == "workbench":
        served = ["--inprocess"] if args.inprocess else ["--workers", str(args.workers)]
        script = Path(sys.executable).with_name("workbench")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "workbench.cli"]
        return Server(name, [*command, "serve", "tabular", "text", "--port", str(port), *served], ("tabular", "text"),
                      {})
    if name == "mlserver":
        folder = _mlserver_folder(work, port, spec_file)
        return Server(name, [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(folder)], ("tabular", "text"),
                      on_path)
    if name == "ray":
        return Server(name, [str(RAY_VENV / "bin" / "python"), str(PEERS / "ray_app.py"), str(port), str(spec_file)],
                      ("tabular", "text"), {**on_path, "RAY_USAGE_STATS_ENABLED": "0"}, ready_s=300.0)
    if name == "naive":
        return Server(name, [sys.executable, str(BENCHMARKS / "bench_http.py"), "--naive-server", str(port),
                             str(spec_file)], ("tabular", "text"), {})
    return Server(name, [sys.executable, str(BENCHMARKS / "bench_http.py"), "--bare-server", str(port)],
                  ("tabular",), {})


def missing_venvs(names: Sequence[str]) -> list[str]:
    wanted = {"mlserver": MLSERVER_VENV / "bin" / "mlserver", "ray": RAY_VENV / "bin" / "python"}
    return [f"{name} ({path})" for name, path in wanted.items() if name in names and not path.exists()]


# -- the smoke check ----------------------------------------------------------------------------
class Reference:
    """Direct ONNX Runtime runs of the model files, on the workbench pipelines' own pre-processing."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from workbench.demo import demo_pipeline

        self.pipelines = {name: demo_pipeline(name) for name in ("tabular", "text")}
        options = ort.SessionOptions()
        options.log_severity_level = 3

        def session(path: str) -> ort.InferenceSession:
            return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        self.tabular = session(spec["tabular"]["model"])
        self.encoder, self.head = session(spec["text"]["encoder"]), session(spec["text"]["head"])

    def probabilities(self, model: str, items: np.ndarray) -> np.ndarray:
        if model == "tabular":
            scaled = self.pipelines["tabular"].predict({"features": items}, outputs=["scaled"]).outputs["scaled"]
            result: np.ndarray = self.tabular.run(["probabilities"], {"X": scaled})[0]
            return result
        names = ["input_ids", "attention_mask", "token_type_ids"]
        tokens = self.pipelines["text"].predict({"text": items}, outputs=names).outputs
        embedding = self.encoder.run(["sentence_embedding"], {name: tokens[name] for name in names})[0]
        result = self.head.run(["probabilities"], {"embedding": embedding})[0]
        return result


def _post(port: int, model: str, body: bytes) -> dict[str, Any]:
    request = urllib.request.Request(f"http://{bh.HOST}:{port}{bh.INFER.format(model)}", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        answer: dict[str, Any] = orjson.loads(reply.read())
        return answer


def smoke_check(port: int, model: str, items: np.ndarray, reference: Reference) -> str:
    """Each item alone, then all in one request: the answers' probabilities against the direct run's."""
    if model == "tabular":
        def body(part: np.ndarray) -> bytes:
            return bh._v2_body("features", "FP32", list(part.shape), part.reshape(-1).tolist())
    else:
        def body(part: np.ndarray) -> bytes:
            return bh._v2_body("text", "BYTES", [len(part)], part.tolist())
    expected = reference.probabilities(model, items)
    # NOTE: batches pad sentences to the longest one: float sums in another order, differences near 1e-7.
    tolerance = 1e-5 if model == "tabular" else 1e-4
    got = {"one by one": [], "all at once": []}
    for i in range(len(items)):
        got["one by one"].append(_probabilities(_post(port, model, body(items[i:i + 1]))))
    got["all at once"] = [_probabilities(_post(port, model, body(items)))]
    worst = 0.0
    for how, parts in got.items():
        values = np.concatenate(parts)
        if values.shape != expected.shape:
            raise RuntimeError(f"{model}, {how}: probabilities of shape {values.shape}, expected {expected.shape}")
        worst = max(worst, float(np.abs(values - expected).max()))
        if worst > tolerance:
            raise RuntimeError(f"{model}, {how}: probabilities differ from a direct ORT run by {worst:.2e}")
    return f"{len(items)} {'rows' if model == 'tabular' else 'sentences'} match, max |diff| {worst:.1e}"


def _probabilities(answer: dict[str, Any]) -> np.ndarray:
    for output in answer["outputs"]:
        if output["name"] == "probabilities":
            return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    raise RuntimeError(f"no 'probabilities' output in {list(o['name'] for o in answer['outputs'])}")


# -- the run --------------------------------------------------------------------------------------
Key = tuple[str, str, int]  # model, server, connections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (the servers' order reversed every other one)")
    parser.add_argument("--connections", default="1,4,16,32", help="offered loads: connections, comma-separated")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"any of {', '.join(SERVERS)}")
    parser.add_argument("--models", default="tabular,text", help="tabular, text or both")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--inprocess", action="store_true", help="the workbench with --inprocess (no Dask)")
    mode.add_argument("--workers", type=int, default=2, help="LocalCluster workers of the workbench")
    parser.add_argument("--plot", default=str(BENCHMARKS / "peers-latency.png"),
                        help="PNG of latency against throughput ('' for none)")
    args = parser.parse_args()
    names = [n for n in args.servers.split(",") if n]
    models = [m for m in args.models.split(",") if m]
    connections = [int(c) for c in args.connections.split(",")]
    if unknown := sorted(set(names) - set(SERVERS)) + sorted(set(models) - {"tabular", "text"}):
        parser.error(f"unknown server or model: {', '.join(unknown)}")
    if "workbench" not in names:
        parser.error("the ratios are to the workbench: --servers needs workbench")
    if missing := missing_venvs(names):
        parser.error(f"no virtualenv for {', '.join(missing)}: run 'make peers' (or leave them out of --servers)")

    from workbench.demo import build_demo_models
    from workbench.demo.corpus import topic_sentences
    from workbench.demo.tabular import load_tabular_data

    build_demo_models(log=lambda _: None)
    data = load_tabular_data()
    sentences = topic_sentences("test")[0]
    bodies = {"tabular": bh.tabular_bodies(data.x_test), "text": bh.text_bodies(sentences)}
    # NOTE: JSON has no NaN: the test rows that have all their values (4), then training rows.
    rows = np.concatenate([data.x_test, data.x_train]).astype(np.float32)
    check_items = {"tabular": rows[~np.isnan(rows).any(axis=1)][:16], "text": np.array(sentences[:8], dtype=object)}
    spec = bh.baseline_spec()
    reference = Reference(spec)
    print(bh.machine_line())
    print(f"# servers: {', '.join(LABELS[n] for n in names)}; one at a time, the others stopped; workbench: "
          + ("in-process" if args.inprocess else f"LocalCluster, {args.workers} workers x 1 thread"))
    print("# every server gets the same raw V2 JSON bodies (tabular: one row per request, raw features, none "
          "pre-scaled; text: one raw sentence per request) and runs the same pre-processing; the Starlette "
          "ceiling answers a fixed body (tabular only)")
    print(f"# load: asyncio streams client, HTTP/1.1 keep-alive, connections {args.connections}, "
          f"{args.seconds:g} s each after a 1 s warm-up; {args.rounds} round{'s' if args.rounds > 1 else ''}")

    results: dict[Key, list[bh.Load]] = {}
    ratios: dict[Key, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        work = Path(tmp)
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(spec))
        header = (f"\n{'round':>5}  {'model':<8} {'server':<18} {'conns':>5} {'req/s':>9} {'p50 ms':>8} "
                  f"{'p99 ms':>8} {'CPU us/req':>10} {'errors':>6}")
        for index in range(1, args.rounds + 1):
            order = names if index % 2 else names[::-1]
            print(header + "\n" + "-" * (len(header) - 1))
            this_round: dict[Key, bh.Load] = {}
            for name in order:
                with started(name, work, spec_file, args) as (port, pid, served):
                    loader = bh.Loader(False, work, {port: pid})
                    for model in (m for m in models if m in served):
                        if name != "starlette":
                            checked = smoke_check(port, model, check_items[model], reference)
                            print(f"# {LABELS[name]}, {model}: {checked}")
                        loader(port, bh.INFER.format(model), bodies[model], 8, 1.0, client="python")
                        for conns in connections:
                            result = loader(port, bh.INFER.format(model), bodies[model], conns, args.seconds,
                                            client="python")
                            this_round[(model, name, conns)] = result
                            results.setdefault((model, name, conns), []).append(result)
                            print(f"{index:>5}  {model:<8} {LABELS[name]:<18} {conns:>5} {result.rps:>9.0f} "
                                  f"{result.p50_ms:>8.2f} {result.p99_ms:>8.2f} {result.cpu_us:>10.0f} "
                                  f"{result.errors:>6}", flush=True)
            for (model, name, conns), result in this_round.items():
                base = this_round.get((model, "workbench", conns))
                if name != "workbench" and base is not None:
                    ratios.setdefault((model, name, conns), []).append(
                        (result.rps / base.rps, result.p50_ms / base.p50_ms, result.p99_ms / base.p99_ms))
    report(results, ratios, args.rounds)
    if args.plot:
        workbench = "in-process" if args.inprocess else f"LocalCluster of {args.workers} workers"
        plot(results, Path(args.plot), f"{os.cpu_count()} cores; workbench on a {workbench}; "
             f"medians of {args.rounds} round(s) of {args.seconds:g} s per load; asyncio client, keep-alive")


@contextlib.contextmanager
def started(name: str, work: Path, spec_file: Path,
            args: argparse.Namespace) -> Iterator[tuple[int, int, tuple[str, ...]]]:
    """A server on a free port until the block ends: its port, its process id, the models it serves."""
    port = bh._free_port()
    spec = server(name, port, work, spec_file, args)
    with bh._process(spec.command, port, work / f"{name}.log", spec.ready_s, spec.env) as pid:
        yield port, pid, spec.models


def _median(values: Sequence[float]) -> float:
    return float(np.median(values))


def report(results: dict[Key, list[bh.Load]], ratios: dict[Key, list[tuple[float, float, float]]],
           rounds: int) -> None:
    print(f"\nmedians over {rounds} round{'s' if rounds > 1 else ''}")
    print(f"{'model':<8} {'server':<18} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10}")
    for (model, name, conns), loads in sorted(results.items(), key=_order):
        rate, p50, p99, cpu = (_median([getattr(r, k) for r in loads]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us"))
        print(f"{model:<8} {LABELS[name]:<18} {conns:>5} {rate:>9.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>10.0f}")
    print("\neach server / the workbench at the same load (medians of each round's ratio; req/s: higher is better "
          "for the server, latency: lower)")
    print(f"{'model':<8} {'server':<18} {'conns':>5} {'req/s':>8} {'p50':>8} {'p99':>8}")
    for (model, name, conns), values in sorted(ratios.items(), key=_order):
        rate, p50, p99 = (_median([v[i] for v in values]) for i in range(3))
        print(f"{model:<8} {LABELS[name]:<18} {conns:>5} {rate:>7.2f}x {p50:>7.2f}x {p99:>7.2f}x")
    failed = sum(r.errors for loads in results.values() for r in loads)
    if failed:
        print(f"\nWARNING: {failed} requests failed (non-2xx or socket errors); their figures are not valid")


def _order(item: tuple[Key, Any]) -> tuple[int, int, int]:
    model, name, conns = item[0]
    return ("tabular", "text").index(model), SERVERS.index(name), conns


def plot(results: dict[Key, list[bh.Load]], path: Path, title: str) -> None:
    """p50 and p99 against throughput, one line per server and model, drawn by ``plot.py``."""
    series: dict[str, dict[str, list[list[float]]]] = {}
    for (model, name, conns), loads in sorted(results.items(), key=_order):
        point = [conns, *(_median([getattr(r, k) for r in loads]) for k in ("rps", "p50_ms", "p99_ms"))]
        series.setdefault(model, {}).setdefault(LABELS[name], []).append(point)
    script = PEERS / "plot.py"
    python = sys.executable if importlib.util.find_spec("matplotlib") else str(RAY_VENV / "bin" / "python")
    if python != sys.executable and not Path(python).exists():
        print(f"\nno plot: matplotlib is in neither {sys.executable} nor {python} ('make peers' puts it in the latter)")
        return
    done = subprocess.run([python, str(script), str(path), title], input=json.dumps(series), text=True,
                          capture_output=True)
    if done.returncode != 0:
        print(f"\nno plot: {done.stderr.strip()[-500:]}")
        return
    print(f"\nplot: {path}")

if __name__ == "__main__":
    main()
