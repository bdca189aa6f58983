"""Shadow traffic on the text demo: int8 beside fp32, compared on live requests, never answering one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from workbench.backend.inprocess import InProcessBackend
from workbench.demo.corpus import TOPICS, topic_sentences
from workbench.engine import Engine
from workbench.monitor.predlog import PredictionLog
from workbench.pipeline import Pipeline, Prediction
from workbench.switching import ShadowTraffic

TEXTS, TOPIC_INDEX = topic_sentences("test")
# NOTE: sentences that mix two topics, where the variants are likeliest to disagree.
MIXED = ["The striker raised interest rates to fight inflation", "The central bank scored twice in the second half",
         "Shareholders of the company were sent off by the referee", "The hedge fund won the final on penalties"]
SENTENCES = [*TEXTS[:16], *MIXED]
#: What the test posts as the truth: the corpus topic, and "sport" for the mixed ones.
TRUTH = [*(TOPICS[i] for i in TOPIC_INDEX[:16]), *["sport"] * len(MIXED)]


async def _until(check: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:g} s")
        await asyncio.sleep(0.01)


def _request(text: str) -> dict[str, np.ndarray]:
    return {"text": np.array([text], dtype=object)}


def _same(a: Prediction, b: Prediction) -> bool:
    return a.outputs.keys() == b.outputs.keys() and all(np.array_equal(a[k], b[k]) for k in a.outputs)


async def test_shadow_never_changes_a_response_and_compares_right(text_pipeline: Pipeline, tmp_path: Path) -> None:
    engine = Engine(InProcessBackend(), prediction_log=PredictionLog(tmp_path / "predictions.sqlite"))
    try:
        await engine.deploy(text_pipeline, name="text")
        await engine.deploy(text_pipeline, name="reference-int8", variant="int8")
        without = [await engine.predict("text", _request(t)) for t in SENTENCES]
        int8 = [await engine.predict("reference-int8", _request(t)) for t in SENTENCES]

        started = await engine.shadow("text", "int8", fraction=1.0)
        assert started["variant"] == "int8" and started["running"] and started["stage"] == "encoder"
        shadow = engine.deployment("text").observers["shadow"]
        assert isinstance(shadow, ShadowTraffic)
        with_shadow = []
        for i, text in enumerate(SENTENCES):
            with_shadow.append(await engine.predict("text", _request(text), request_id=f"shadowed-{i}"))
            # NOTE: one at a time, so that the candidate too runs batches of one, as the reference did.
            await _until(lambda i=i: shadow.compared == i + 1, 30, f"the comparison of request {i}")

        assert all(_same(a, b) for a, b in zip(without, with_shadow)), "the shadow changed a response"
        assert all(p.variants["encoder"] == "fp32" for p in with_shadow)
        agreed = sum(a["topic"][0] == b["topic"][0] for a, b in zip(with_shadow, int8))
        report = engine.stats("text")["shadow"]
        assert report["output"] == "topic" and report["active_variants"] == {"fp32": len(SENTENCES)}
        assert report["agreement"] == {"rows": len(SENTENCES), "agreed": agreed, "rate": agreed / len(SENTENCES)}
        assert (report["seen"], report["sampled"], report["compared"]) == (len(SENTENCES),) * 3
        assert report["dropped"] == report["failed"] == report["pending"] == 0
        latency = report["latency_ms"]
        assert all(latency[side][q] > 0 for side in ("active", "candidate") for q in ("p50", "p99"))

        posted = await engine.feedback("text", {f"shadowed-{i}": label for i, label in enumerate(TRUTH)})
        assert posted["accepted"] == len(TRUTH)
        quality = engine.stats("text")["shadow"]["quality"]
        active_right = sum(p["topic"][0] == t for p, t in zip(with_shadow, TRUTH))
        candidate_right = sum(p["topic"][0] == t for p, t in zip(int8, TRUTH))
        assert quality == {"labelled_rows": len(TRUTH), "active_accuracy": active_right / len(TRUTH),
                           "candidate_accuracy": candidate_right / len(TRUTH)}
        assert active_right < len(TRUTH), "the mixed sentences make some labels wrong: the accuracies say something"

        final = await engine.stop_shadow("text")
        assert final is not None and not final["running"] and final["compared"] == len(SENTENCES)
        assert "shadow" not in engine.stats("text") and await engine.stop_shadow("text") is None
        events = [e["event"] for e in engine.stats("text")["events"]]
        assert events[-2:] == ["shadow_started", "shadow_stopped"]
    finally:
        await engine.close()


async def test_a_shadow_that_falls_behind_drops_mirrored_requests_not_answers(text_pipeline: Pipeline) -> None:
    engine = Engine.inprocess()
    try:
        await engine.deploy(text_pipeline, name="text")
        await engine.shadow("text", "int8", fraction=0.5, max_pending=2)
        shadow = engine.deployment("text").observers["shadow"]
        assert isinstance(shadow, ShadowTraffic)
        answers = await asyncio.gather(*(engine.predict("text", _request(t)) for t in TEXTS[:40]))
        assert all(a.variants["encoder"] == "fp32" and a["topic"].shape == (1,) for a in answers)
        await _until(lambda: shadow.report()["pending"] == 0, 30, "the shadow catching up")
        report = engine.stats("text")["shadow"]
        assert report["seen"] == 40 and report["sampled"] == 20, "every second request is mirrored"
        assert report["dropped"] > 0, "40 requests at once overflow a queue of 2"
        assert report["compared"] + report["dropped"] + report["failed"] == report["sampled"]
        assert engine.stats("text")["errors_total"] == 0
        await engine.undeploy("text")
        assert not shadow.running
    finally:
        await engine.close()
