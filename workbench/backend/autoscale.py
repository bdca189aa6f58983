"""Autoscaling: the number of workers follows the traffic of the deployments.

:class:`WorkbenchAdaptive` is Dask's :class:`~distributed.deploy.Adaptive`
with ``target()`` computed from what the serving process sees rather than
from the scheduler's task queue (batches go straight to the workers, so the
scheduler sees no tasks). The signal, over the recent past:

- **queue depth**: requests waiting for a batch, in rounds of batches that
  every worker thread holding the deployment takes at once
  (``queue_depth / (max_batch_size * threads)``);
- **utilisation**: the share of the time worker threads held batches
  (batch run time / (window x threads), summed over the deployments, since
  every deployment is warm on every worker);
- **p99 latency** of each deployment against its latency target
  (:meth:`Engine.set_latency_target <workbench.engine.Engine.set_latency_target>`).

The rule, :func:`decide` (pure, so it is tested on synthetic signals):

=====  ====================================================================================
up     a queue of at least ``backlog_up`` rounds builds, or a p99 exceeds its target while
       utilisation is at least ``busy_utilisation``: to enough workers to bring utilisation
       to ``target_utilisation``, and at least one more.
down   nothing queued, utilisation under ``idle_utilisation`` and every known p99 at most
       ``comfort`` x its target: to the fewest workers that keep utilisation at
       ``target_utilisation``.
hold   otherwise, and while workers asked for have not joined or warmed every deployment.
=====  ====================================================================================

Damping is Adaptive's own: a check every ``interval``, and a worker is
removed only after ``wait_count`` checks in a row chose it. The figures are
read over the time since the cluster last settled at its size (at most
``window_s``), so the latency that asked for a worker does not ask for
another once that worker serves. Every scaling action is recorded with the
numbers that drove it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from distributed.deploy.adaptive import Adaptive

from workbench.backend.pool import WorkerPool, WorkerSlot
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.engine import Engine

__all__ = [
    "Autoscaler", "Decision", "DeploymentSignal", "EngineFigures", "ScalingPolicy", "ScalingSignal", "ScalingSource",
    "WorkbenchAdaptive", "cordon", "decide", "engine_figures",
]

Action = Literal["up", "down", "hold"]
T = TypeVar("T")

#: Longest a worker chosen for removal may take to finish its batches before it is retired anyway.
_DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """Thresholds of the scaling rule (see the module docstring).

    Parameters
    ----------
    backlog_up
        Scale up when the queue holds this many rounds of full batches for every thread.
    busy_utilisation
        A p99 over target scales up only when utilisation is at least this (more
        workers do not help a latency that idle workers already give).
    target_utilisation
        Utilisation the new size aims at, up or down.
    idle_utilisation
        Scale down only under this utilisation.
    comfort
        Scale down only while every p99 is at most this share of its target.
    min_samples
        Requests needed in the window before its p99 counts.
    """

    backlog_up: float = 1.0
    busy_utilisation: float = 0.7
    target_utilisation: float = 0.6
    idle_utilisation: float = 0.3
    comfort: float = 0.5
    min_samples: int = 5

    def __post_init__(self) -> None:
        if not self.backlog_up > 0:
            raise ValueError("backlog_up must be > 0")
        if not 0 < self.idle_utilisation < self.target_utilisation <= self.busy_utilisation <= 1:
            raise ValueError("utilisations must satisfy 0 < idle_utilisation < target_utilisation "
                             "<= busy_utilisation <= 1")
        if not 0 < self.comfort <= 1:
            raise ValueError("comfort must be in (0, 1]")
        if not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise ValueError("min_samples must be an integer >= 1")


@dataclass(frozen=True, slots=True)
class DeploymentSignal:
    """One deployment's figures over the recent window."""

    name: str
    queue_depth: int = 0
    in_flight: int = 0
    threads: int = 0
    warm_workers: int = 0
    max_batch_size: int = 32
    busy_s: float = 0.0
    requests: int = 0
    p99_ms: float = math.nan
    latency_target_ms: float | None = None

    @property
    def backlog(self) -> float:
        """Rounds of full batches waiting per thread (``inf`` with a queue and no thread)."""
        if not self.queue_depth:
            return 0.0
        return self.queue_depth / (self.max_batch_size * self.threads) if self.threads else math.inf

    def latency_known(self, policy: ScalingPolicy) -> bool:
        return self.requests >= policy.min_samples and not math.isnan(self.p99_ms)

    def figures(self) -> dict[str, Any]:
        return {"queue_depth": self.queue_depth, "in_flight": self.in_flight, "threads": self.threads,
                "requests": self.requests, "p99_ms": _round(self.p99_ms), "latency_target_ms": self.latency_target_ms,
                "busy_s": _round(self.busy_s)}


@dataclass(frozen=True, slots=True)
class ScalingSignal:
    """What :func:`decide` reads: the cluster's size and each deployment's figures.

    ``planned`` is the number of workers the cluster manager was asked for;
    ``workers`` and ``threads`` are those the scheduler lists now.
    """

    planned: int
    workers: int
    threads: int
    window_s: float
    deployments: tuple[DeploymentSignal, ...] = ()

    @property
    def utilisation(self) -> float:
        """Share of worker-thread time spent running batches over the window."""
        busy = sum(d.busy_s for d in self.deployments)
        if not self.threads:
            return 1.0 if busy or any(d.in_flight for d in self.deployments) else 0.0
        return busy / (self.window_s * self.threads)


@dataclass(frozen=True, slots=True)
class Decision:
    """A target number of workers, and why."""

    target: int
    action: Action
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def decide(signal: ScalingSignal, policy: ScalingPolicy, minimum: int, maximum: int) -> Decision:
    """The number of workers the cluster should have, given ``signal``, within ``[minimum, maximum]``.

    Examples
    --------
    >>> busy = DeploymentSignal("tabular", threads=1, warm_workers=1, busy_s=0.95, requests=200,
    ...                         p99_ms=40.0, latency_target_ms=20.0)
    >>> decide(ScalingSignal(planned=1, workers=1, threads=1, window_s=1.0, deployments=(busy,)),
    ...        ScalingPolicy(), minimum=1, maximum=4).target
    2
    """
    current = signal.planned
    utilisation = signal.utilisation
    figures = {"workers": current, "ready": signal.workers, "threads": signal.threads,
               "window_s": _round(signal.window_s), "utilisation": _round(utilisation),
               "deployments": {d.name: d.figures() for d in signal.deployments}}

    def to(target: int, reason: str) -> Decision:
        bounded = min(max(target, minimum), maximum)
        if bounded != target:
            reason += f"; {target} wanted, the {'minimum' if bounded > target else 'maximum'} is {bounded}"
        action: Action = "up" if bounded > current else "down" if bounded < current else "hold"
        return Decision(bounded, action, reason, figures)

    if not minimum <= current <= maximum:
        bounded = min(max(current, minimum), maximum)
        return Decision(bounded, "up" if bounded > current else "down",
                        f"{current} workers, outside [{minimum}, {maximum}]", figures)
    if signal.workers < current:
        return to(current, f"waiting for {current - signal.workers} of {current} workers to join")
    warming = [d.name for d in signal.deployments if d.warm_workers < current]
    if warming:
        return to(current, f"waiting for {', '.join(warming)} to warm up on every worker")

    usage = f"utilisation {utilisation:.0%} of {signal.threads} threads"
    pressure = []
    for d in signal.deployments:
        if not d.threads and (d.queue_depth or d.in_flight):
            pressure.append(f"{d.name}: {d.queue_depth} queued and {d.in_flight} in flight with no worker")
        elif d.backlog >= policy.backlog_up:
            pressure.append(f"{d.name}: {d.queue_depth} queued, {d.backlog:.1f} rounds of "
                            f"{d.max_batch_size} rows x {d.threads} threads")
        elif (d.latency_target_ms is not None and d.latency_known(policy) and d.p99_ms > d.latency_target_ms
              and utilisation >= policy.busy_utilisation):
            pressure.append(f"{d.name}: p99 {d.p99_ms:.1f} ms > target {d.latency_target_ms:g} ms")
    if pressure:
        wanted = max(current + 1, math.ceil(current * utilisation / policy.target_utilisation))
        return to(wanted, f"{'; '.join(pressure)} ({usage})")

    if utilisation >= policy.idle_utilisation:
        return to(current, f"{usage}, not under {policy.idle_utilisation:.0%}")
    for d in signal.deployments:
        if d.queue_depth:
            return to(current, f"{d.name}: {d.queue_depth} queued ({usage})")
        if (d.latency_target_ms is not None and d.latency_known(policy)
                and d.p99_ms > policy.comfort * d.latency_target_ms):
            return to(current, f"{d.name}: p99 {d.p99_ms:.1f} ms, not under {policy.comfort:.0%} of target "
                               f"{d.latency_target_ms:g} ms ({usage})")
    wanted = math.ceil(current * utilisation / policy.target_utilisation)
    if wanted >= current:
        return to(current, f"{usage}, nothing queued")
    latencies = "; ".join(f"{d.name}: p99 {d.p99_ms:.1f} ms vs target {d.latency_target_ms:g} ms"
                          for d in signal.deployments if d.latency_target_ms is not None and d.latency_known(policy))
    return to(wanted, f"{usage} < {policy.idle_utilisation:.0%}, nothing queued"
                      + (f"; {latencies}" if latencies else ""))


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


# -- reading the engine ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EngineFigures:
    """What the engine knows: each deployment's signal, and batches in flight per worker address."""

    deployments: tuple[DeploymentSignal, ...]
    in_flight: dict[str, int]


def engine_figures(engine: Engine, last_s: float) -> EngineFigures:
    """Read every deployment's figures over the last ``last_s`` seconds (on the engine's loop)."""
    signals = []
    in_flight: dict[str, int] = {}
    for name in engine.names():
        deployment = engine.deployment(name)
        workers = engine.backend.workers(name, deployment.generation)
        for worker in workers:
            in_flight[worker["address"]] = in_flight.get(worker["address"], 0) + worker["in_flight"]
        batcher = deployment.batcher
        recent = batcher.stats.recent(last_s)
        signals.append(DeploymentSignal(
            name, queue_depth=batcher.queue_depth, in_flight=batcher.in_flight,
            threads=engine.backend.threads(name, deployment.generation), warm_workers=len(workers),
            max_batch_size=batcher.config.max_batch_size, busy_s=recent["busy_s"], requests=recent["requests"],
            p99_ms=recent["latency_ms"]["p99"], latency_target_ms=deployment.latency_target_ms,
        ))
    return EngineFigures(tuple(signals), in_flight)


async def cordon(engine: Engine, addresses: Collection[str], timeout_s: float = _DRAIN_TIMEOUT_S) -> Callable[[], None]:
    """Send no more batches to ``addresses``, and wait until the batches they run have come back.

    Returns what puts the workers back in service (when their removal fails).
    """
    # NOTE: a worker drops its pipelines as it closes, and a batch that reaches it then fails:
    # it must be idle before it is retired. Its in-flight batches finish normally (no re-dispatch).
    pool: WorkerPool | None = getattr(engine.backend, "pool", None)
    if pool is None:
        return lambda: None
    taken: list[tuple[tuple[str, int], WorkerSlot]] = []
    for name in engine.names():
        key = (name, engine.deployment(name).generation)
        for slot in pool.workers(key):
            if slot.address in addresses:
                pool.discard(key, slot.address)
                taken.append((key, slot))
    deadline = time.monotonic() + timeout_s
    while any(slot.in_flight for _, slot in taken) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)

    def restore() -> None:
        for key, slot in taken:
            pool.add(key, slot.address, resources=slot.resources, nthreads=slot.nthreads, providers=slot.providers)

    return restore


class ScalingSource(Protocol):
    """What :class:`WorkbenchAdaptive` needs from the serving side (:class:`Autoscaler` provides it)."""

    def figures(self, last_s: float) -> EngineFigures: ...
    async def cordon(self, addresses: list[str]) -> Callable[[], None]: ...
    def record(self, action: dict[str, Any]) -> None: ...


# -- the Adaptive ----------------------------------------------------------------------------
class WorkbenchAdaptive(Adaptive):
    """Dask's ``Adaptive`` with its target taken from the workbench's own signal.

    Made by ``cluster.adapt(Adaptive=WorkbenchAdaptive, ...)`` (see :meth:`Autoscaler.start`).
    Workers chosen for removal first stop getting batches and finish theirs
    (:func:`cordon`); then Adaptive retires them.

    Parameters
    ----------
    cluster
        The cluster manager that adds and removes workers (LocalCluster, KubeCluster, ...).
    source
        The engine's figures, cordoning and the record of actions; used on ``home_loop``.
    home_loop
        The engine's event loop (the cluster's may be another one).
    policy
        The thresholds of :func:`decide`.
    window_s
        Longest stretch of the recent past the figures cover.
    **kwargs
        Adaptive's own: ``minimum``, ``maximum``, ``interval``, ``wait_count``.
    """

    def __init__(self, cluster: Any, *, source: ScalingSource, home_loop: asyncio.AbstractEventLoop,
                 policy: ScalingPolicy, window_s: float, **kwargs: Any) -> None:
        self._source = source
        self._home_loop = home_loop
        self.policy = policy
        self.window_s = window_s
        self.last: Decision | None = None
        self._in_flight: dict[str, int] = {}
        self._settled_at = time.monotonic()
        super().__init__(cluster, **kwargs)

    async def target(self) -> int:
        now = time.monotonic()
        last_s = min(self.window_s, max(now - self._settled_at, self.interval or 1.0))

        async def read() -> EngineFigures:
            return self._source.figures(last_s)

        figures = await self._at_home(read)
        self._in_flight = figures.in_flight
        workers = self.cluster.scheduler_info.get("workers", {})
        signal = ScalingSignal(
            planned=len(self.plan), workers=len(workers), threads=sum(w.get("nthreads", 1) for w in workers.values()),
            window_s=last_s, deployments=figures.deployments,
        )
        if signal.workers != signal.planned or any(d.warm_workers != signal.planned for d in signal.deployments):
            # NOTE: while the cluster changes size the window restarts, so the next decision
            # reads only figures from the size it settled at.
            self._settled_at = now
        self.last = decide(signal, self.policy, int(self.minimum), int(self.maximum))
        return self.last.target

    async def _at_home(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if asyncio.get_running_loop() is self._home_loop:
            return await fn()
        # NOTE: a cluster object of the user's (KubeCluster, ...) may run on another loop;
        # the engine's state is used on the engine's own loop only.
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(), self._home_loop))

    async def workers_to_close(self, target: int) -> list[Any]:
        """The workers with the fewest batches in flight (the newest among equals)."""
        workers = list(self.cluster.scheduler_info.get("workers", {}).items())
        count = len(workers) - target
        if count <= 0:
            return []
        ranked = sorted(enumerate(workers), key=lambda item: (self._in_flight.get(item[1][0], 0), -item[0]))
        return [info.get("name", address) for _, (address, info) in ranked[:count]]

    # NOTE: typed loosely: AdaptiveCore's abstract signatures swap the argument types of
    # scale_up (a count) and scale_down (worker names) that Adaptive implements.
    async def scale_up(self, n: Any) -> None:
        self._record("up", len(self.plan), n)
        await super().scale_up(n)

    async def scale_down(self, workers: Any) -> None:
        if not workers:
            return
        self._record("down", len(self.plan), len(self.plan) - len(workers), workers=[str(w) for w in workers])
        names = set(workers)
        addresses = [address for address, info in self.cluster.scheduler_info.get("workers", {}).items()
                     if info.get("name", address) in names or address in names]

        async def drain() -> Callable[[], None]:
            return await self._source.cordon(addresses)

        restore = await self._at_home(drain)
        try:
            await super().scale_down(workers)
        except BaseException as exc:
            failure = {"time": time.time(), "action": "down_failed", "workers": [str(w) for w in workers],
                       "reason": f"{type(exc).__name__}: {exc}; the workers serve again"}

            async def put_back() -> None:
                restore()
                self._source.record(failure)

            await self._at_home(put_back)
            raise

    def _record(self, action: Action, before: int, after: int, **details: Any) -> None:
        self._settled_at = time.monotonic()
        last = self.last or Decision(after, action, "asked for directly")
        self._source.record({"time": time.time(), "action": action, "from": before, "to": after,
                             "reason": last.reason, **details, "figures": last.figures})


class Autoscaler:
    """Autoscaling for one engine: turns Dask's adaptive scaling on and off, and keeps its decisions.

    Parameters
    ----------
    engine
        Whose deployments drive the scaling.
    history
        How many scaling actions are kept.
    """

    def __init__(self, engine: Engine, history: int = 100) -> None:
        self._engine = engine
        self.adaptive: WorkbenchAdaptive | None = None
        self.settings: dict[str, Any] = {}
        self.decisions: deque[dict[str, Any]] = deque(maxlen=history)

    @property
    def enabled(self) -> bool:
        return self.adaptive is not None and self.adaptive.state in ("starting", "running")

    def start(self, cluster: Any, minimum: int, maximum: int, *, interval_s: float = 1.0, wait_count: int = 3,
              window_s: float = 10.0, policy: ScalingPolicy | None = None) -> dict[str, Any]:
        """Scale ``cluster`` between ``minimum`` and ``maximum`` workers (replacing any earlier settings)."""
        if not isinstance(minimum, int) or minimum < 0:
            raise ValueError("minimum must be an integer >= 0")
        if not isinstance(maximum, int) or maximum < max(minimum, 1):
            raise ValueError(f"maximum must be an integer >= max(minimum, 1) = {max(minimum, 1)}")
        if not interval_s > 0:
            raise ValueError("interval_s must be > 0")
        if not isinstance(wait_count, int) or wait_count < 1:
            raise ValueError("wait_count must be an integer >= 1")
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        if not getattr(cluster, "_supports_scaling", True) or not hasattr(cluster, "adapt"):
            raise WorkbenchError(f"{type(cluster).__name__} cannot add or remove workers", 409)
        policy = policy or ScalingPolicy()
        self.stop("replaced by new settings")
        self.adaptive = cluster.adapt(
            Adaptive=WorkbenchAdaptive, minimum=minimum, maximum=maximum, interval=interval_s, wait_count=wait_count,
            source=self, home_loop=asyncio.get_running_loop(), policy=policy, window_s=window_s,
        )
        self.settings = {"minimum": minimum, "maximum": maximum, "interval_s": interval_s, "wait_count": wait_count,
                         "window_s": window_s, "policy": asdict(policy)}
        self.decisions.append({"time": time.time(), "action": "start", "reason": "autoscaling turned on",
                               **{k: v for k, v in self.settings.items() if k != "policy"}})
        return self.view()

    # -- the ScalingSource of the Adaptive, on the engine's loop ----------------------------
    def figures(self, last_s: float) -> EngineFigures:
        return engine_figures(self._engine, last_s)

    async def cordon(self, addresses: list[str]) -> Callable[[], None]:
        return await cordon(self._engine, addresses)

    def record(self, action: dict[str, Any]) -> None:
        self.decisions.append(action)

    def stop(self, reason: str = "autoscaling turned off") -> None:
        """Stop scaling; the cluster keeps the workers it has."""
        if self.adaptive is None:
            return
        adaptive, self.adaptive = self.adaptive, None
        if getattr(adaptive.loop, "asyncio_loop", None) is asyncio.get_running_loop():
            adaptive.stop(reason=f"workbench: {reason}")
        else:  # NOTE: a cluster object of the user's on its own loop: stop it there
            adaptive.loop.add_callback(adaptive.stop, reason=f"workbench: {reason}")
        self.decisions.append({"time": time.time(), "action": "stop", "reason": reason})

    def view(self, deployment: str | None = None, history: int = 20) -> dict[str, Any]:
        """Settings, the latest target and its reason, workers pending removal, and recent decisions.

        For one ``deployment``, the latest figures are those of that deployment.
        """
        adaptive = self.adaptive
        view: dict[str, Any] = {"enabled": self.enabled, **self.settings}
        if adaptive is not None:
            view["workers"] = {"planned": len(adaptive.plan), "observed": len(adaptive.observed)}
            view["pending_removal"] = {str(w): f"{count}/{adaptive.wait_count}"
                                       for w, count in dict(adaptive.close_counts).items()}
            last = adaptive.last
            if last is not None:
                figures = dict(last.figures)
                deployments: Mapping[str, Any] = figures.pop("deployments", {})
                if deployment is not None:
                    figures.update(deployments.get(deployment, {}))
                else:
                    figures["deployments"] = deployments
                view["last"] = {"target": last.target, "action": last.action, "reason": last.reason,
                                "figures": figures}
        view["decisions"] = list(self.decisions)[-history:]
        return view
