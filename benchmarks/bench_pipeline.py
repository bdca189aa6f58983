"""In-process pipeline throughput as a ratio of raw ``InferenceSession.run`` (same run, same session).

For each demo pipeline and batch size, the raw figure is the model's own session
run on inputs already prepared (tokenised, imputed and scaled); the pipeline
figure is ``pipeline.predict`` on the raw request (validation, every stage,
post-processing). Calls alternate between the two, one by one, so drift on a shared
machine hits both alike.

Run: ``make bench`` or ``python benchmarks/bench_pipeline.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from workbench.demo import build_demo_models, demo_pipeline
from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import load_tabular_data
from workbench.pipeline import OnnxStage, Pipeline


def _compare(raw: Callable[[], object], piped: Callable[[], object], items: int, seconds: float) -> tuple[float, float]:
    """Items per second of each path, calls interleaved one by one so drift hits both alike."""
    raw(), piped()  # warm both paths
    clock = time.perf_counter
    spent = {"raw": 0.0, "piped": 0.0}
    calls = 0
    deadline = clock() + 2 * seconds
    while clock() < deadline or calls < 3:
        for key, fn in (("raw", raw), ("piped", piped)):
            began = clock()
            fn()
            spent[key] += clock() - began
        calls += 1
    return calls * items / spent["raw"], calls * items / spent["piped"]


def _raw_call(pipeline: Pipeline, stage_name: str, request: dict[str, np.ndarray]) -> Callable[[], object]:
    stage = pipeline.stage(stage_name)
    assert isinstance(stage, OnnxStage) and stage.loaded is not None
    prepared = pipeline.predict(request, outputs=list(stage.inputs)).outputs
    session = stage.loaded.session
    feed = {spec.name: prepared[name] for spec, name in zip(stage.loaded.signature.inputs, stage.inputs)}
    names = [spec.name for spec in stage.loaded.signature.outputs]
    return lambda: session.run(names, feed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per path and case")
    args = parser.parse_args()

    build_demo_models(log=lambda _: None)
    tabular = demo_pipeline("tabular")
    text = demo_pipeline("text")
    rows = load_tabular_data().x_test
    sentences, _ = topic_sentences("test")
    cases = [
        ("tabular", tabular, "model", lambda n: {"features": rows[:n]}),
        ("text", text, "encoder", lambda n: {"text": np.array(sentences[:: max(1, len(sentences) // n)][:n],
                                                              dtype=object)}),
    ]
    print(f"# machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
          f"onnxruntime {ort.__version__}, providers {text.stage('encoder').provider}")
    print(f"# about {args.seconds:g} s per path and case, calls interleaved")
    print(f"{'pipeline':<8} {'batch':>5} {'raw items/s':>12} {'pipeline items/s':>17} {'ratio':>6}")
    for name, pipeline, stage, make in cases:
        for batch in (1, 32):
            request = make(batch)
            raw, piped = _compare(_raw_call(pipeline, stage, request), lambda r=request, p=pipeline: p.predict(r),
                                  batch, args.seconds)
            print(f"{name:<8} {batch:>5} {raw:>12.0f} {piped:>17.0f} {piped / raw:>6.3f}")


if __name__ == "__main__":
    main()
