"""Overload over real HTTP: far more concurrent requests than the text pipeline can serve within its target.

The anchors are Triton's L0_model_queue (a bounded queue answers at once instead
of letting latency grow) and Ray Serve's backpressure tests: every request gets
an answer, the excess gets a fast 429 with ``Retry-After``, and the requests
that are admitted still meet the latency target.

The server runs the text pipeline in-process (the admission logic does not
depend on where batches run, and this keeps the test to one process).
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from loopback import Answer, client, post, text_request
from servers import Served, serving

from workbench.config import WorkbenchSettings
from workbench.demo.corpus import topic_sentences
from workbench.serving.app import ServeConfig

SENTENCES = topic_sentences("test")[0][:64]
#: The p99 latency target set on the pipeline (ms).
TARGET_MS = 800.0
#: How many batch run times the admitted requests' p99 may exceed the target by. Admission judges by the
#: recent batches, so a sudden slowdown (a shared machine) catches the requests already admitted, and the
#: floor (the batch in flight and the next are never refused) may wait for a slow batch and then run its
#: own. Without admission the same waves queue 3200 sentences, about 400 batches: the bound, in this
#: run's own slowest batch, tells bounded latency from a growing queue on any machine.
SLOW_BATCHES = 3
#: Batches of at most 8 sentences keep one batch well inside the target on a busy machine.
BATCHING = {"max_batch_size": 8, "max_delay_ms": 5}
#: Sentences per request (a full batch): 400 requests at once are 3200 sentences, 20 s of work or more here.
ROWS = 8
CONCURRENT = 400
WAVES = 2


@pytest.fixture(scope="module")
def served(demo_home: object) -> Iterator[Served]:
    with serving(ServeConfig(batching=BATCHING), inprocess=True, pipelines=["text"]) as live:
        yield live


async def _wave(http: httpx.AsyncClient, live: Served, count: int) -> list[Answer]:
    """``count`` requests of ``ROWS`` sentences at once; each gets an answer (a hang fails the wave)."""
    url = f"{live.url}/v2/models/text/infer"
    bodies = [text_request([SENTENCES[(i + k) % len(SENTENCES)] for k in range(ROWS)]) for i in range(count)]
    return await asyncio.wait_for(asyncio.gather(*(post(http, url, body) for body in bodies)), 300)


async def test_overload_gets_fast_429s_and_the_admitted_requests_meet_the_target(served: Served) -> None:
    async with client(connections=CONCURRENT + 8) as http:
        # NOTE: a warm-up within capacity measures the batches, so admission has a service rate to judge by.
        for _ in range(3):
            warm = await _wave(http, served, 16)
            assert [a.status for a in warm] == [200] * 16, [a.body for a in warm if a.status != 200][:2]
        response = await http.put(f"{served.url}/api/pipelines/text/latency-target", json={"target_p99_ms": TARGET_MS})
        assert response.status_code == 200, response.text
        before = (await http.get(f"{served.url}/api/pipelines/text/stats")).json()
        answers: list[Answer] = []
        for _ in range(WAVES):
            answers += await _wave(http, served, CONCURRENT)
        after = (await http.get(f"{served.url}/api/pipelines/text/stats")).json()

    statuses = Counter(a.status for a in answers)
    unexpected = [(a.status, a.error or a.body) for a in answers if a.status not in (200, 429)]
    assert not unexpected, f"{len(unexpected)} answers neither 200 nor 429: {unexpected[:3]}"
    ok = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    assert len(refused) >= len(answers) // 4, f"far more requests than capacity, yet only {statuses} "
    assert len(ok) >= WAVES, "admission refused more than its floor allows"
    for answer in refused:
        assert int(answer.headers["retry-after"]) >= 1
        assert "over its latency target" in answer.body["error"], answer.body
        assert f"against a target of {TARGET_MS:g} ms" in answer.body["error"]
    for answer in ok:
        assert len(answer.output("topic")) == ROWS

    assert after["rejected_total"] - before["rejected_total"] == len(refused)
    assert after["admission"]["refused_for_latency"] == len(refused)
    assert after["requests_total"] - before["requests_total"] == len(ok)  # NOTE: refused ones never ran
    assert after["admission"]["waiting_rows"] == 0

    # NOTE: the server-side latency (queued to answered) is what admission controls. The client-side time
    # also holds this process's own load generator sending 400 requests at once, which no server setting
    # shortens; from the request sent to its answer read, a refusal must beat an admitted request.
    totals = np.array([a.timings_ms["total"] for a in ok])
    p50, p99 = np.percentile(totals, [50, 99])
    refused_s = statistics.median(a.answer_s for a in refused)
    ok_s = statistics.median(a.answer_s for a in ok)
    print(f"\n{len(answers)} requests in {WAVES} waves of {CONCURRENT}: {dict(statuses)}; admitted p50 {p50:.0f} ms, "
          f"p99 {p99:.0f} ms ({(totals > TARGET_MS).mean():.1%} over the target of {TARGET_MS:g} ms); sent to "
          f"answered, medians: 429 {refused_s * 1e3:.0f} ms, 200 {ok_s * 1e3:.0f} ms; batches p99 "
          f"{after['batch_run_ms']['p99']:.0f} ms")
    slowest_ms = after["batch_run_ms"]["p100"]
    bound_ms = TARGET_MS + SLOW_BATCHES * slowest_ms
    assert p99 <= bound_ms, f"admitted p99 {p99:.0f} ms over the target {TARGET_MS:g} ms + {SLOW_BATCHES} of " \
                            f"this run's slowest batch ({slowest_ms:.0f} ms)"
    assert refused_s < ok_s, "a refusal must come back faster than an admitted request"


@pytest.fixture(scope="module")
def defaults(demo_home: object) -> Iterator[Served]:
    """The text pipeline served with every default (its latency budget included), in-process."""
    with serving(ServeConfig(), inprocess=True, pipelines=["text"]) as live:
        yield live


async def test_with_the_defaults_a_burst_on_a_fresh_server_is_shed_to_the_latency_budget(defaults: Served) -> None:
    budget_ms = WorkbenchSettings().latency_budget_ms
    assert budget_ms == 1000.0, "the documented default"
    count = 600
    async with client(connections=count + 8) as http:
        stats = (await http.get(f"{defaults.url}/api/pipelines/text/stats")).json()
        assert stats["admission"]["latency_target_ms"] == budget_ms and stats["requests_total"] == 0
        url = f"{defaults.url}/v2/models/text/infer"
        # NOTE: 4800 sentences, several seconds of work anywhere: far past the budget.
        bodies = [text_request([SENTENCES[(i + k) % len(SENTENCES)] for k in range(ROWS)]) for i in range(count)]
        answers = await asyncio.wait_for(asyncio.gather(*(post(http, url, body) for body in bodies)), 300)
        after = (await http.get(f"{defaults.url}/api/pipelines/text/stats")).json()

    statuses = Counter(a.status for a in answers)
    assert set(statuses) == {200, 429}, statuses
    refused = [a for a in answers if a.status == 429]
    assert all(int(a.headers["retry-after"]) >= 1 and f"against a target of {budget_ms:g} ms" in a.body["error"]
               for a in refused)
    totals = np.array([a.timings_ms["total"] for a in answers if a.status == 200])
    p99 = float(np.percentile(totals, 99))
    slowest_ms = after["batch_run_ms"]["p100"]
    print(f"\n{count} requests of {ROWS} sentences at once, defaults: {dict(statuses)}; admitted p99 {p99:.0f} ms "
          f"(budget {budget_ms:g} ms), slowest batch {slowest_ms:.0f} ms")
    assert p99 <= budget_ms + SLOW_BATCHES * slowest_ms
    assert after["admission"]["refused_for_latency"] == len(refused)
