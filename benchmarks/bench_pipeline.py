"""In-process pipeline throughput as a ratio of raw ``InferenceSession.run`` (same run, same session).

For each demo pipeline and batch size, the raw figure is the pipeline's own
sessions (every ONNX model it runs: the text pipeline's encoder and its head)
run on inputs already prepared (tokenised, imputed and scaled); the pipeline
figure is ``pipeline.predict`` on the raw request (validation, every stage,
post-processing). Both go through the same 64 different requests in turn (different
sentences, of different lengths; different rows), as traffic does: one request
repeated would let the raw loop run from warm caches that no real stream gives it.
The two paths take turns of 16 calls (``--turn``), so drift on a shared machine hits both
alike while each path runs its requests back to back, as a serving process does (``--turn 1``
alternates call by call: each call then starts from the caches the other path left, which
costs the pipeline's Python stages a little more than the raw runs; 0.927 against 0.935 in one run).
``--encoder-only`` also prints the text ratio against the encoder's session alone; ``--hand-written``
prints, in place of the pipeline, a loop that calls the tokenizer and the sessions directly (no
validation, no labels, no stage bookkeeping): the floor for any code that tokenises, so the text
ratio splits into what tokenising costs and what the pipeline adds. ``--text-variant int8`` runs the
text pipeline on the quantised encoder.

Run: ``make bench`` or ``python benchmarks/bench_pipeline.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import functools
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np
import onnxruntime as ort

from workbench.demo import build_demo_models, demo_pipeline
from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import load_tabular_data
from workbench.pipeline import Pipeline

#: Different requests each path goes through in turn.
_REQUESTS = 64
#: Calls of one path per turn: about 20-60 ms of work, short against the drift of a shared machine.
_TURN = 16


def _compare(raw: Sequence[Callable[[], object]], piped: Sequence[Callable[[], object]], items: int,
             seconds: float, turn: int) -> tuple[float, float]:
    """Items per second of each path, taking turns of ``turn`` calls so drift hits both alike."""
    for fn in (*raw, *piped):
        fn()  # warm both paths
    clock = time.perf_counter
    spent = {"raw": 0.0, "piped": 0.0}
    calls = 0
    deadline = clock() + 2 * seconds
    while clock() < deadline or calls < 3 * turn:
        for key, fns in (("raw", raw), ("piped", piped)):
            began = clock()
            for i in range(calls, calls + turn):
                fns[i % len(fns)]()
            spent[key] += clock() - began
        calls += turn
    return calls * items / spent["raw"], calls * items / spent["piped"]


def _raw_call(pipeline: Pipeline, request: dict[str, np.ndarray], only: str | None = None) -> Callable[[], object]:
    """The pipeline's sessions (or the ``only`` one) run one after the other on ``request``'s prepared inputs."""
    runs = []
    for stage in pipeline.inference_stages:
        if only is not None and stage.name != only:
            continue
        assert stage.loaded is not None
        prepared = pipeline.predict(request, outputs=list(stage.inputs)).outputs
        feed = {spec.name: prepared[name] for spec, name in zip(stage.loaded.signature.inputs, stage.inputs)}
        runs.append((stage.loaded.session, [spec.name for spec in stage.loaded.signature.outputs], feed))

    def run() -> None:
        for session, names, feed in runs:
            session.run(names, feed)

    return run


def _hand_written_call(pipeline: Pipeline, request: dict[str, np.ndarray]) -> Callable[[], object]:
    """The tokenizer stage and the sessions called directly on ``request``: what the pipeline does, minus itself."""
    tokenize = pipeline.stage("tokenize")
    steps = []
    for stage in pipeline.inference_stages:
        assert stage.loaded is not None
        signature = stage.loaded.signature
        steps.append((stage.loaded.session, [spec.name for spec in signature.outputs],
                      [(spec.name, name) for spec, name in zip(signature.inputs, stage.inputs)], stage.outputs))
    text = request["text"]

    def run() -> object:
        tensors = dict(zip(tokenize.outputs, tokenize.run(text)))
        for session, outputs, feed, produced in steps:
            tensors.update(zip(produced, session.run(outputs, {model: tensors[name] for model, name in feed})))
        return tensors

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per path and case")
    parser.add_argument("--encoder-only", action="store_true", help="also compare text with the encoder alone")
    parser.add_argument("--hand-written", action="store_true",
                        help="also compare text called by hand (tokenizer + sessions, no pipeline) with raw")
    parser.add_argument("--text-variant", default=None,
                        help="the encoder variant of the text pipeline (default: the demo's, fp32)")
    parser.add_argument("--turn", type=int, default=_TURN,
                        help="calls of one path before the other takes its turn (1: call by call)")
    args = parser.parse_args()

    build_demo_models(log=lambda _: None)
    tabular = demo_pipeline("tabular")
    text = demo_pipeline("text")
    if args.text_variant:
        text = text.with_variant(args.text_variant, "encoder")
    rows = load_tabular_data().x_test
    sentences, _ = topic_sentences("test")

    def text_requests(n: int) -> list[dict[str, np.ndarray]]:
        return [{"text": np.array([sentences[(i * n + j) % len(sentences)] for j in range(n)], dtype=object)}
                for i in range(_REQUESTS)]

    def tabular_requests(n: int) -> list[dict[str, np.ndarray]]:
        return [{"features": np.roll(rows, -i * n, axis=0)[:n]} for i in range(_REQUESTS)]

    # (name, pipeline, requests, the only session raw runs, whether the pipeline is replaced by a hand-written loop)
    cases: list[tuple[str, Pipeline, Callable[[int], list[dict[str, np.ndarray]]], str | None, bool]] = [
        ("tabular", tabular, tabular_requests, None, False), ("text", text, text_requests, None, False)]
    if args.encoder_only:
        cases.append(("text, raw = encoder only", text, text_requests, "encoder", False))
    if args.hand_written:
        cases.append(("text, by hand", text, text_requests, None, True))
    print(f"# machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
          f"onnxruntime {ort.__version__}, providers {text.inference_stages[0].provider}")
    print(f"# about {args.seconds:g} s per path and case, turns of {args.turn} calls, "
          f"{_REQUESTS} different requests in turn")
    print(f"{'pipeline':<8} {'batch':>5} {'raw items/s':>12} {'pipeline items/s':>17} {'ratio':>6}")
    for name, pipeline, make, only, by_hand in cases:
        for batch in (1, 32):
            requests = make(batch)
            piped = [_hand_written_call(pipeline, r) if by_hand else functools.partial(pipeline.predict, r)
                     for r in requests]
            raw_rate, piped_rate = _compare([_raw_call(pipeline, r, only) for r in requests], piped, batch,
                                            args.seconds, args.turn)
            print(f"{name:<8} {batch:>5} {raw_rate:>12.0f} {piped_rate:>17.0f} {piped_rate / raw_rate:>6.3f}")

if __name__ == "__main__":
    main()
