"""The autoscaling target, from synthetic signals: no cluster is started."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from workbench.backend.autoscale import (
    DeploymentSignal,
    EngineFigures,
    ScalingPolicy,
    ScalingSignal,
    WorkbenchAdaptive,
    cordon,
    decide,
)
from workbench.backend.pool import WorkerPool
from workbench.engine import Engine
from workbench.errors import WorkbenchError

POLICY = ScalingPolicy()


def deployment(name: str = "tabular", *, threads: int = 1, warm: int = 1, **figures: Any) -> DeploymentSignal:
    figures.setdefault("requests", 100)
    return DeploymentSignal(name, threads=threads, warm_workers=warm, **figures)


def signal(*deployments: DeploymentSignal, planned: int = 1, workers: int | None = None, threads: int | None = None,
           window_s: float = 1.0) -> ScalingSignal:
    workers = planned if workers is None else workers
    return ScalingSignal(planned, workers, workers if threads is None else threads, window_s, deployments)


def test_latency_over_target_while_busy_scales_up() -> None:
    busy = deployment(busy_s=0.9, p99_ms=45.0, latency_target_ms=20.0)
    decision = decide(signal(busy), POLICY, minimum=1, maximum=4)
    assert (decision.action, decision.target) == ("up", 2)
    assert "p99 45.0 ms > target 20 ms" in decision.reason and "utilisation 90%" in decision.reason
    assert decision.figures["utilisation"] == 0.9
    assert decision.figures["deployments"]["tabular"]["p99_ms"] == 45.0


def test_scale_up_aims_at_the_target_utilisation() -> None:
    busy = deployment(threads=4, warm=4, busy_s=3.6, p99_ms=45.0, latency_target_ms=20.0)
    # NOTE: 90% of 4 threads is 3.6 threads' work; at 60% that takes 6 workers.
    assert decide(signal(busy, planned=4), POLICY, minimum=1, maximum=10).target == 6
    assert decide(signal(busy, planned=4), POLICY, minimum=1, maximum=5).target == 5


def test_latency_over_target_with_idle_workers_holds() -> None:
    slow = deployment(busy_s=0.4, p99_ms=45.0, latency_target_ms=20.0)
    decision = decide(signal(slow), POLICY, minimum=1, maximum=4)
    assert (decision.action, decision.target) == ("hold", 1)
    assert "utilisation 40%" in decision.reason


def test_a_building_queue_scales_up_without_a_latency_target() -> None:
    queued = deployment(queue_depth=70, max_batch_size=32, threads=2, warm=2, busy_s=0.2)
    decision = decide(signal(queued, planned=2, window_s=1.0), POLICY, minimum=1, maximum=4)
    assert (decision.action, decision.target) == ("up", 3)
    assert "70 queued" in decision.reason and "1.1 rounds" in decision.reason
    short = deployment(queue_depth=20, max_batch_size=32, threads=2, warm=2, busy_s=1.0)
    assert decide(signal(short, planned=2), POLICY, minimum=1, maximum=4).action == "hold"


def test_requests_with_no_worker_scale_up_from_zero() -> None:
    waiting = deployment(threads=0, warm=0, in_flight=1)
    decision = decide(signal(waiting, planned=0), POLICY, minimum=0, maximum=2)
    assert (decision.action, decision.target) == ("up", 1)
    assert "no worker" in decision.reason
    assert decide(signal(deployment(threads=0, warm=0), planned=0), POLICY, 0, 2).action == "hold"


def test_low_utilisation_and_comfortable_latency_scale_down() -> None:
    quiet = deployment(threads=4, warm=4, busy_s=0.8, p99_ms=5.0, latency_target_ms=20.0)
    decision = decide(signal(quiet, planned=4), POLICY, minimum=1, maximum=4)
    # NOTE: 20% of 4 threads is 0.8 threads' work; at 60% that fits on 2 workers.
    assert (decision.action, decision.target) == ("down", 2)
    assert "utilisation 20% of 4 threads < 30%" in decision.reason and "p99 5.0 ms" in decision.reason
    idle = deployment(threads=4, warm=4, busy_s=0.0, requests=0)
    to_minimum = decide(signal(idle, planned=4), POLICY, minimum=1, maximum=4)
    assert to_minimum.target == 1 and to_minimum.reason.endswith("; 0 wanted, the minimum is 1")


def test_no_scale_down_while_latency_is_near_target_or_requests_queue() -> None:
    near = deployment(threads=2, warm=2, busy_s=0.2, p99_ms=15.0, latency_target_ms=20.0)
    decision = decide(signal(near, planned=2), POLICY, minimum=1, maximum=4)
    assert decision.action == "hold" and "not under 50% of target 20 ms" in decision.reason
    queued = deployment(threads=2, warm=2, busy_s=0.2, queue_depth=3)
    assert decide(signal(queued, planned=2), POLICY, minimum=1, maximum=4).action == "hold"


def test_hysteresis_between_scaling_down_and_up() -> None:
    # NOTE: after a scale-down the utilisation rises to at most the target utilisation,
    # below the busy threshold that scales up again: no flapping.
    quiet = deployment(threads=2, warm=2, busy_s=0.58, p99_ms=5.0, latency_target_ms=20.0)
    assert decide(signal(quiet, planned=2), POLICY, 1, 4).target == 1
    after = deployment(busy_s=0.58, p99_ms=25.0, latency_target_ms=20.0)
    assert decide(signal(after), POLICY, 1, 4).action == "hold"


def test_latency_of_a_few_requests_does_not_count() -> None:
    few = deployment(busy_s=0.9, p99_ms=500.0, latency_target_ms=20.0, requests=POLICY.min_samples - 1)
    assert decide(signal(few), POLICY, 1, 4).action == "hold"
    few_idle = deployment(threads=2, warm=2, busy_s=0.1, p99_ms=500.0, latency_target_ms=20.0, requests=2)
    assert decide(signal(few_idle, planned=2), POLICY, 1, 4).action == "down"


def test_deployments_share_the_workers() -> None:
    a = deployment("a", threads=2, warm=2, busy_s=0.5, p99_ms=30.0, latency_target_ms=20.0)
    b = deployment("b", threads=2, warm=2, busy_s=1.0, p99_ms=5.0, latency_target_ms=20.0)
    decision = decide(signal(a, b, planned=2), POLICY, 1, 4)
    # NOTE: utilisation is over both deployments' batches: (0.5 + 1.0) / 2 threads = 75%.
    assert (decision.action, decision.target) == ("up", 3)
    assert decision.reason.startswith("a: p99 30.0 ms")
    quiet_b = deployment("b", threads=2, warm=2, busy_s=0.05, p99_ms=5.0, latency_target_ms=20.0)
    busy_a = deployment("a", threads=2, warm=2, busy_s=1.5)
    assert decide(signal(busy_a, quiet_b, planned=2), POLICY, 1, 4).action == "hold"


def test_waits_for_workers_to_join_and_warm_up() -> None:
    busy = deployment(busy_s=0.9, p99_ms=45.0, latency_target_ms=20.0)
    joining = decide(signal(busy, planned=2, workers=1, threads=1), POLICY, 1, 4)
    assert (joining.action, joining.target) == ("hold", 2) and "waiting for 1 of 2 workers" in joining.reason
    warming = decide(signal(busy, planned=2), POLICY, 1, 4)
    assert warming.action == "hold" and "tabular to warm up" in warming.reason


def test_bounds() -> None:
    busy = deployment(threads=2, warm=2, busy_s=1.8, p99_ms=45.0, latency_target_ms=20.0)
    at_max = decide(signal(busy, planned=2), POLICY, minimum=1, maximum=2)
    assert (at_max.action, at_max.target) == ("hold", 2) and "3 wanted, the maximum is 2" in at_max.reason
    idle = deployment(threads=3, warm=3, requests=0)
    above = decide(signal(idle, planned=3), POLICY, minimum=1, maximum=2)
    assert (above.action, above.target) == ("down", 2) and "outside [1, 2]" in above.reason
    below = decide(signal(planned=0), POLICY, minimum=1, maximum=2)
    assert (below.action, below.target) == ("up", 1)
    assert decide(signal(planned=2), POLICY, minimum=1, maximum=2).target == 1  # nothing deployed


@pytest.mark.parametrize("fields", [
    {"backlog_up": 0}, {"idle_utilisation": 0.7}, {"busy_utilisation": 0.5}, {"comfort": 1.5}, {"min_samples": 0},
])
def test_policy_is_checked(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ScalingPolicy(**fields)


# -- the Adaptive, on a stand-in cluster --------------------------------------------------------
class FakeCluster:
    """What Adaptive reads and calls on a cluster manager, with workers named 0, 1, ..."""

    def __init__(self, workers: int) -> None:
        self.scheduler_info: dict[str, Any] = {"workers": {}}
        self.closed: list[list[Any]] = []
        self.scheduler_comm = self
        for name in range(workers):
            self._add(name)

    def _add(self, name: int) -> None:
        self.scheduler_info["workers"][f"tcp://w{name}"] = {"name": name, "nthreads": 1}

    @property
    def plan(self) -> set[int]:
        return {w["name"] for w in self.scheduler_info["workers"].values()}

    requested = observed = plan

    def scale(self, n: int) -> None:
        for name in range(len(self.plan), n):
            self._add(name)

    async def retire_workers(self, names: list[Any], **_: Any) -> None:
        self.closed.append(names)
        self.scheduler_info["workers"] = {
            a: w for a, w in self.scheduler_info["workers"].items() if w["name"] not in names}

    def scale_down(self, workers: list[Any]) -> None:
        pass


class FakeSource:
    """The serving side: the latest of ``figures``; cordoned addresses and actions are kept."""

    def __init__(self, figures: list[EngineFigures], actions: list[dict[str, Any]]) -> None:
        self._figures = figures
        self.actions = actions
        self.cordoned: list[list[str]] = []

    def figures(self, last_s: float) -> EngineFigures:
        return self._figures[-1]

    async def cordon(self, addresses: list[str]) -> Callable[[], None]:
        self.cordoned.append(sorted(addresses))
        return lambda: None

    def record(self, action: dict[str, Any]) -> None:
        self.actions.append(action)


def adaptive_for(cluster: FakeCluster, figures: list[EngineFigures], actions: list[dict[str, Any]],
                 **kwargs: Any) -> WorkbenchAdaptive:
    # NOTE: interval 0 leaves the periodic callback off: the test calls adapt() itself.
    return WorkbenchAdaptive(cluster, source=FakeSource(figures, actions), home_loop=asyncio.get_running_loop(),
                             policy=POLICY, window_s=5.0, interval=0, **kwargs)


async def test_adaptive_scales_down_after_wait_count_and_records_why() -> None:
    cluster = FakeCluster(workers=2)
    quiet = deployment(threads=2, warm=2, busy_s=0.0, requests=0)
    figures = [EngineFigures((quiet,), {"tcp://w0": 0, "tcp://w1": 0})]
    actions: list[dict[str, Any]] = []
    adaptive = adaptive_for(cluster, figures, actions, minimum=1, maximum=2, wait_count=3)
    for _ in range(2):
        await adaptive.adapt()
    assert cluster.closed == [] and dict(adaptive.close_counts) == {1: 2}
    await adaptive.adapt()
    # NOTE: the newest of the idle workers goes, once it gets no more batches.
    assert cluster.closed == [[1]] and adaptive._source.cordoned == [["tcp://w1"]]  # type: ignore[attr-defined]
    assert [(a["action"], a["from"], a["to"], a["workers"]) for a in actions] == [("down", 2, 1, ["1"])]
    assert "utilisation 0% of 2 threads" in actions[0]["reason"] and actions[0]["figures"]["utilisation"] == 0


async def test_adaptive_closes_the_worker_with_fewest_batches_in_flight() -> None:
    cluster = FakeCluster(workers=3)
    quiet = deployment(threads=3, warm=3, busy_s=0.1, requests=0)
    figures = [EngineFigures((quiet,), {"tcp://w0": 0, "tcp://w1": 1, "tcp://w2": 2})]
    adaptive = adaptive_for(cluster, figures, [], minimum=1, maximum=3, wait_count=1)
    await adaptive.adapt()
    assert [sorted(names) for names in cluster.closed] == [[0, 1]]
    assert await adaptive.workers_to_close(target=0) == [2]


async def test_a_burst_between_checks_resets_the_scale_down_count() -> None:
    cluster = FakeCluster(workers=2)
    quiet = EngineFigures((deployment(threads=2, warm=2, requests=0),), {})
    busy = EngineFigures((deployment(threads=2, warm=2, busy_s=9.0, queue_depth=100),), {})
    figures = [quiet]
    actions: list[dict[str, Any]] = []
    adaptive = adaptive_for(cluster, figures, actions, minimum=1, maximum=3, wait_count=2)
    await adaptive.adapt()
    assert dict(adaptive.close_counts) == {1: 1}
    figures.append(busy)
    await adaptive.adapt()
    assert [(a["action"], a["to"]) for a in actions] == [("up", 3)]
    assert "100 queued" in actions[0]["reason"] and not adaptive.close_counts
    figures.append(EngineFigures((deployment(threads=3, warm=3, requests=0),), {}))
    await adaptive.adapt()
    assert cluster.closed == [] and dict(adaptive.close_counts) == {1: 1, 2: 1}


async def test_cordon_stops_new_batches_and_waits_for_those_in_flight() -> None:
    pool = WorkerPool()
    for address in ("tcp://a", "tcp://b"):
        pool.add(("tabular", 1), address)
    engine = SimpleNamespace(names=lambda: ["tabular"], deployment=lambda name: SimpleNamespace(generation=1),
                             backend=SimpleNamespace(pool=pool))
    busy = next(s for s in pool.workers(("tabular", 1)) if s.address == "tcp://b")
    busy.in_flight = 1

    async def finish() -> None:
        await asyncio.sleep(0.05)
        assert pool.choose(("tabular", 1), "cpu").address == "tcp://a"  # type: ignore[union-attr]
        busy.in_flight = 0

    finishing = asyncio.get_running_loop().create_task(finish())
    restore = await cordon(engine, ["tcp://b"])  # type: ignore[arg-type]
    assert finishing.done() and busy.in_flight == 0
    assert [s.address for s in pool.workers(("tabular", 1))] == ["tcp://a"]
    restore()
    assert sorted(s.address for s in pool.workers(("tabular", 1))) == ["tcp://a", "tcp://b"]


# -- the engine's API, without a cluster manager ------------------------------------------------
class AddressOnlyBackend:
    """A Dask backend attached by address: no cluster manager to scale."""

    kind = "dask"
    cluster = None

    def on_workers_changed(self, listener: Any) -> None:
        pass

    def on_state_change(self, listener: Any) -> None:
        pass


def test_autoscale_without_a_cluster_manager_says_what_to_do() -> None:
    engine = Engine(AddressOnlyBackend())  # type: ignore[arg-type]
    with pytest.raises(WorkbenchError, match=r"Workbench.connect.*cluster=cluster") as error:
        engine.autoscale(1, 2)
    assert error.value.status_code == 409
    with pytest.raises(WorkbenchError, match="in-process"):
        Engine.inprocess().autoscale(1, 2)
    with pytest.raises(ValueError, match="maximum"):
        engine.autoscale(1)
    assert engine.autoscale(None) == {"enabled": False, "decisions": []}


def test_nan_latency_is_reported_as_unknown() -> None:
    decision = decide(signal(deployment(p99_ms=math.nan, requests=0)), POLICY, 1, 2)
    assert decision.figures["deployments"]["tabular"]["p99_ms"] is None
