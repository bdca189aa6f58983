"""Two fronts on one cluster: each change is atomic on the scheduler, and each front applies the other's.

Front ``a`` starts a LocalCluster and deploys; front ``b`` connects to its
scheduler, as a second ``workbench serve --scheduler`` does. Both run on this
test's event loop, so that their changes can be made at the same moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
from waiting import until

from workbench.demo.tabular import load_tabular_data
from workbench.engine import Engine
from workbench.errors import WorkbenchError

ROWS = load_tabular_data().x_test[:8]
ROUNDS = 50


@pytest.fixture
async def fronts(demo_home: object, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Engine, Engine]]:
    monkeypatch.setenv("WORKBENCH_PREDICTION_LOG", "off")  # NOTE: two fronts in one process, one home
    a = await Engine.local(workers=1)
    try:
        await a.deploy("tabular", placement="fused")
        b = await Engine.connect(a.backend.client.scheduler.address)
        try:
            yield a, b
        finally:
            await b.close()
    finally:
        await a.close()


async def test_two_fronts_changing_two_knobs_at_once_both_hold_on_both(fronts: tuple[Engine, Engine]) -> None:
    a, b = fronts
    assert b.names() == ["tabular"]
    for i in range(1, ROUNDS + 1):
        # NOTE: back to back on one loop: both publications race to the scheduler.
        a.set_batching("tabular", max_batch_size=i)
        b.set_batching("tabular", max_delay_ms=float(i))
        await asyncio.wait_for(asyncio.gather(a.settled(), b.settled()), 60)

        def both_hold(i: int = i) -> bool:
            return all((e.deployment("tabular").batcher.config.max_batch_size,
                        e.deployment("tabular").batcher.config.max_delay_ms) == (i, float(i)) for e in (a, b))

        await until(both_hold, 30, f"round {i}: both knobs on both fronts")
    shared = (await a.backend.published())["tabular"]
    assert (shared["batching"]["max_batch_size"], shared["batching"]["max_delay_ms"]) == (ROUNDS, float(ROUNDS))
    assert shared["version"] >= 2 * ROUNDS
    answer = await b.predict("tabular", {"features": ROWS})
    assert answer.outputs["label"].shape == (8,)


async def test_a_swap_and_a_latency_target_on_one_front_are_served_by_the_other(
    fronts: tuple[Engine, Engine]
) -> None:
    a, b = fronts
    a.set_latency_target("tabular", 250.0)
    await asyncio.wait_for(a.swap("tabular", "logreg"), 120)
    await until(lambda: b.deployment("tabular").variants == {"model": "logreg"}, 30, "b serving the swapped variant")
    await until(lambda: b.deployment("tabular").latency_target_ms == 250.0, 30, "b holding a's latency target")
    assert b.deployment("tabular").generation == a.deployment("tabular").generation
    answers = await asyncio.gather(*(b.predict("tabular", {"features": ROWS[i:i + 1]}) for i in range(8)))
    assert {p.variants["model"] for p in answers} == {"logreg"}
    events = [e for e in b.deployment("tabular").events if e.get("by") == "another front"]
    assert {e["event"] for e in events} >= {"swapped", "latency_target"}


async def test_of_two_swaps_at_once_one_wins_on_both_fronts_and_the_other_is_refused(
    fronts: tuple[Engine, Engine]
) -> None:
    a, b = fronts
    results = await asyncio.wait_for(asyncio.gather(a.swap("tabular", "logreg"), b.swap("tabular", "gbt"),
                                                    return_exceptions=True), 120)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1, results
    assert isinstance(refused[0], WorkbenchError) and refused[0].status_code == 409
    assert "another front" in str(refused[0]) and "undone" in str(refused[0])
    winner = "logreg" if not isinstance(results[0], BaseException) else "gbt"
    # NOTE: gbt is tabular's first variant, so the loser's undone state already shows it; the
    # generation tells whether the loser has followed the winner's change.
    await until(lambda: all(e.deployment("tabular").variants == {"model": winner} for e in (a, b))
                and a.deployment("tabular").generation == b.deployment("tabular").generation, 30,
                f"both fronts on {winner} at one generation")
    assert a.deployment("tabular").generation >= 2
    for front in (a, b):
        answer = await front.predict("tabular", {"features": ROWS})
        assert answer.variants == {"model": winner} and np.isfinite(answer.outputs["probabilities"]).all()


async def test_an_undeploy_on_one_front_is_followed_by_the_other(fronts: tuple[Engine, Engine]) -> None:
    a, b = fronts
    await asyncio.wait_for(a.undeploy("tabular"), 120)
    await until(lambda: b.names() == [], 30, "b no longer serving tabular")
    assert "tabular" not in await b.backend.published()
