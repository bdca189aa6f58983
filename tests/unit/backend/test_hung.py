"""The hang deadline follows the measured calls, a cordoned worker takes no batch, and a heartbeat brings it back."""

from __future__ import annotations

import asyncio

import pytest

from workbench.backend.hung import CallTimes, HangRule, heartbeat
from workbench.backend.pool import WorkerPool


def test_the_deadline_is_the_first_one_until_enough_calls_then_follows_their_p99() -> None:
    times = CallTimes(HangRule(factor=10, floor_s=2, first_s=30, min_samples=8))
    for _ in range(7):
        times.add(0.5)
    assert times.deadline_s() == 30
    times.add(0.5)
    assert times.deadline_s() == pytest.approx(5.0)
    for _ in range(CallTimes._KEPT):
        times.add(0.001)
    assert times.deadline_s() == 2, "never below the floor"


@pytest.mark.parametrize("field", ["factor", "floor_s", "first_s", "heartbeat_s", "heartbeat_timeout_s"])
def test_a_rule_refuses_what_is_not_a_positive_number(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        HangRule(**{field: 0})


async def test_a_cordoned_worker_takes_no_batch_until_uncordoned_and_forgetting_clears_it() -> None:
    pool = WorkerPool()
    key = ("tabular", 1)
    pool.add(key, "tcp://a")
    pool.add(key, "tcp://b")
    assert pool.cordon("tcp://b", "silent") and not pool.cordon("tcp://b", "again")
    assert {pool.choose(key, "cpu").address for _ in range(6)} == {"tcp://a"}  # type: ignore[union-attr]
    assert pool.cordoned["tcp://b"]["reason"] == "silent"
    assert pool.uncordon("tcp://b") and not pool.uncordon("tcp://b")
    assert {pool.choose(key, "cpu").address for _ in range(6)} == {"tcp://a", "tcp://b"}  # type: ignore[union-attr]
    pool.cordon("tcp://a", "silent")
    pool.forget_worker("tcp://a")
    assert pool.cordoned == {} and [s.address for s in pool.workers(key)] == ["tcp://b"]


async def test_a_heartbeat_pings_until_an_answer_comes_in_time() -> None:
    rule = HangRule(heartbeat_s=0.01, heartbeat_timeout_s=0.05)
    calls = 0

    async def ping() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            await asyncio.sleep(1)  # NOTE: silent: past the heartbeat's timeout

    assert await heartbeat(ping, rule, gone=lambda: False)
    assert calls == 3


async def test_a_heartbeat_ends_when_the_worker_is_gone() -> None:
    rule = HangRule(heartbeat_s=0.01, heartbeat_timeout_s=0.05)

    async def refused() -> None:
        raise ConnectionRefusedError

    assert not await heartbeat(refused, rule, gone=lambda: False)

    async def silent() -> None:
        await asyncio.sleep(1)

    checks = iter([False, False, True])
    assert not await heartbeat(silent, rule, gone=lambda: next(checks))
