"""Where a deployment's batches run: in the serving process (embedded) or on Dask workers (remote).

This is the seed's distinction between embedded and remote deployment, decided from measured cost. A
batch of a light pipeline (a few stages over tabular rows: well under a millisecond) costs less than
the trip to a worker and back (encoding, the wire, the worker's hand-off: a few milliseconds here), so
it is cheaper where the request already is; a heavy one (a transformer encoder) runs on workers, which
keeps the serving process free for HTTP and lets the work scale out.

Placements (:data:`PLACEMENTS`):

- ``auto``, the default: decided at deploy from a few probe batches run on a worker, then re-decided
  from the served batches' own timings, with hysteresis;
- ``inprocess``: always embedded, in the serving process's thread pool;
- ``fused``: always remote, the whole pipeline on one worker;
- ``by-resource``: always remote, split by resource (GPU stages on GPU workers).

Workers hold every deployment whatever its placement, so offline batch and a move back to the workers
need no load; an embedded deployment also holds its sessions in the serving process (one ONNX Runtime
thread each: it is light, and the process serves HTTP). While embedded, one batch every
``probe_interval_s`` still runs on a worker, so that the trip's cost stays measured. Probe rows go
through the pipeline like any batch (a ``cached`` stage keeps what they computed); pipelines with a
``python`` stage are never probed, since user code may refuse made-up rows or act on them.

The policy (:class:`PlacementPolicy`, pure), with ``ratio = compute_ms / trip_ms``, medians over the
recent batches, where ``compute_ms`` is a batch's time in its stages and ``trip_ms`` a remote batch's
``transfer`` (the round trip less the stages and the wait for a lane)::

    at deploy            embedded when ratio < 1
    embedded -> remote   when ratio > remote_above (2.0) at `confirm` reviews in a row
    remote -> embedded   when ratio < embed_below (0.5) at `confirm` reviews in a row
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workbench._sync import aclose
from workbench.errors import WorkbenchError
from workbench.pipeline.graph import Prediction

__all__ = ["EMBEDDED", "PLACEMENTS", "REMOTE", "CostMeter", "PlacedRunner", "PlacementDecision",
           "PlacementPolicy", "PlacementRules", "check_placement"]

logger = logging.getLogger(__name__)

#: The placements a deployment can have.
PLACEMENTS = ("auto", "inprocess", "fused", "by-resource")
EMBEDDED = "embedded"
REMOTE = "remote"
#: Timings of a remote batch that are not its stages' work.
_NOT_COMPUTE = frozenset(("transfer", "worker_queue"))

RunBatch = Callable[[dict[str, np.ndarray]], Awaitable[Prediction]]


def check_placement(placement: object) -> str:
    """``placement`` if it is one of :data:`PLACEMENTS`; a 400 naming them otherwise."""
    if placement not in PLACEMENTS:
        raise WorkbenchError(f"placement must be one of {', '.join(repr(p) for p in PLACEMENTS)}, "
                             f"not {placement!r}", 400)
    return str(placement)


@dataclass(frozen=True, slots=True)
class PlacementRules:
    """When ``auto`` moves a deployment (see the module docstring)."""

    embed_below: float = 0.5
    """Move to the serving process when compute is below this fraction of the trip."""
    remote_above: float = 2.0
    """Move to the workers when compute is above this multiple of the trip."""
    confirm: int = 3
    """Reviews in a row that must agree before a move."""
    review_interval_s: float = 1.0
    """Seconds between two reviews (made as batches finish: an idle deployment is not reviewed)."""
    probe_interval_s: float = 5.0
    """While embedded, one batch this often runs on a worker, to keep the trip measured."""
    min_batches: int = 8
    """Batches measured before the first review."""
    probe_batches: int = 5
    """Batches of one row run on a worker at deploy, after one that warms up."""

    def __post_init__(self) -> None:
        if not 0 < self.embed_below < 1 < self.remote_above:
            raise ValueError("placement rules need 0 < embed_below < 1 < remote_above")
        for label in ("confirm", "min_batches", "probe_batches"):
            if getattr(self, label) < 1:
                raise ValueError(f"{label} must be an integer >= 1")
        if self.review_interval_s <= 0 or self.probe_interval_s <= 0:
            raise ValueError("review_interval_s and probe_interval_s must be > 0")


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    """Where batches run, why, and the figures it was decided on."""

    where: str
    reason: str
    compute_ms: float | None = None
    trip_ms: float | None = None
    time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PlacementPolicy:
    """Decides embedded or remote from measured costs: pure, fed by :class:`PlacedRunner`."""

    def __init__(self, rules: PlacementRules | None = None) -> None:
        self.rules = rules or PlacementRules()
        self._streak = 0

    def initial(self, compute_ms: float, trip_ms: float, now: float = 0.0) -> PlacementDecision:
        """The choice at deploy: embedded when a batch costs less than its trip."""
        ratio = compute_ms / max(trip_ms, 1e-6)
        if ratio < 1:
            reason = f"a batch computes in {compute_ms:.2f} ms, less than its trip to a worker ({trip_ms:.2f} ms)"
            return PlacementDecision(EMBEDDED, reason, compute_ms, trip_ms, now)
        reason = f"a batch computes in {compute_ms:.2f} ms, more than its trip to a worker ({trip_ms:.2f} ms)"
        return PlacementDecision(REMOTE, reason, compute_ms, trip_ms, now)

    def review(self, where: str, compute_ms: float | None, trip_ms: float | None,
               now: float = 0.0) -> PlacementDecision | None:
        """A move, once the costs crossed the far edge of the band ``confirm`` reviews in a row; else ``None``."""
        if compute_ms is None or trip_ms is None:
            return None
        ratio = compute_ms / max(trip_ms, 1e-6)
        rules = self.rules
        crossed = ratio > rules.remote_above if where == EMBEDDED else ratio < rules.embed_below
        self._streak = self._streak + 1 if crossed else 0
        if self._streak < rules.confirm:
            return None
        self._streak = 0
        if where == EMBEDDED:
            reason = (f"batches now compute in {compute_ms:.2f} ms, over {rules.remote_above:g}x their trip to "
                      f"a worker ({trip_ms:.2f} ms)")
            return PlacementDecision(REMOTE, reason, compute_ms, trip_ms, now)
        reason = (f"batches now compute in {compute_ms:.2f} ms, under {rules.embed_below:g}x their trip to a "
                  f"worker ({trip_ms:.2f} ms)")
        return PlacementDecision(EMBEDDED, reason, compute_ms, trip_ms, now)


class CostMeter:
    """Recent batches' compute time (stages, wherever they ran) and trip time (remote batches only)."""

    def __init__(self, size: int = 64) -> None:
        self.compute_ms: deque[float] = deque(maxlen=size)
        self.trip_ms: deque[float] = deque(maxlen=size)
        self.batches = 0

    def add(self, timings: Mapping[str, float], *, remote: bool) -> None:
        self.batches += 1
        self.compute_ms.append(sum(ms for part, ms in timings.items() if part not in _NOT_COMPUTE))
        if remote and "transfer" in timings:
            self.trip_ms.append(timings["transfer"])

    def medians(self) -> tuple[float | None, float | None]:
        compute = statistics.median(self.compute_ms) if self.compute_ms else None
        trip = statistics.median(self.trip_ms) if self.trip_ms else None
        return compute, trip


class PlacedRunner:
    """A ``run_batch`` that sends each batch to the serving process or to the workers, as its placement says.

    Parameters
    ----------
    name
        The deployment (for messages).
    placement
        One of :data:`PLACEMENTS`.
    remote
        The runner on the workers (a :class:`~workbench.backend.dispatch.DaskRunner`).
    load_local
        Builds the runner in this process (loads the pipeline's sessions here); called once, when needed.
    rules
        When ``auto`` moves.
    on_decision
        Hears of every decision (the deployment's events).
    clock
        Seconds, monotonic (tests pass a manual one).
    """

    def __init__(self, name: str, placement: str, remote: RunBatch, load_local: Callable[[], Awaitable[RunBatch]],
                 *, rules: PlacementRules | None = None,
                 on_decision: Callable[[PlacementDecision], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.placement = check_placement(placement)
        self.remote = remote
        self.local: RunBatch | None = None
        self.policy = PlacementPolicy(rules)
        self.meter = CostMeter()
        self.where = EMBEDDED if placement == "inprocess" else REMOTE
        self.decision = PlacementDecision(self.where, f"placement {placement!r}", time=time.time())
        self.moves = 0
        self.in_flight = 0
        self._load_local = load_local
        self.on_decision = on_decision
        self._clock = clock
        self._next_review = 0.0
        self._last_remote = 0.0
        self._loading: asyncio.Task[None] | None = None

    @property
    def rules(self) -> PlacementRules:
        return self.policy.rules

    @property
    def variants(self) -> dict[str, str]:
        return dict(getattr(self.remote, "variants", {}))

    @property
    def redispatched(self) -> int:
        return int(getattr(self.remote, "redispatched", 0))

    @property
    def hung(self) -> int:
        """Calls to a worker that passed their hang deadline (see :mod:`workbench.backend.hung`)."""
        return int(getattr(self.remote, "hung", 0))

    def deadline_s(self) -> float | None:
        """The hang deadline of the next call to a worker; ``None`` when batches do not go to workers."""
        deadline = getattr(self.remote, "deadline_s", None)
        return float(deadline()) if deadline is not None else None

    async def start(self, probe: Mapping[str, np.ndarray] | None) -> PlacedRunner:
        """Settle the first placement: load here for ``inprocess``; for ``auto``, time ``probe`` on a worker."""
        if self.placement == "inprocess":
            self.local = await self._load_local()
        elif self.placement == "auto":
            decision = await self._probe(probe)
            if decision.where == EMBEDDED:
                self.local = await self._load_local()
            # NOTE: the first choice is no move.
            self.where, self.decision = decision.where, decision
        return self

    async def _probe(self, probe: Mapping[str, np.ndarray] | None) -> PlacementDecision:
        now = self._clock()
        if probe is None:
            return PlacementDecision(REMOTE, "not probed (custom Python stages are never fed made-up rows): "
                                     "decided from its first batches", time=time.time())
        try:
            await self.remote(dict(probe))  # NOTE: a first run pays for lazy set-up; not counted
            for _ in range(self.rules.probe_batches):
                # NOTE: into the meter the reviews read: the trip stays known while embedded.
                self.meter.add((await self.remote(dict(probe))).timings_ms, remote=True)
        except Exception as exc:  # a pipeline that refuses made-up rows is decided from real traffic instead
            logger.debug("placement probe of %r failed", self.name, exc_info=True)
            return PlacementDecision(REMOTE, f"the probe batch failed ({type(exc).__name__}): decided from its "
                                     "first batches", time=time.time())
        compute, trip = self.meter.medians()
        assert compute is not None and trip is not None
        self._last_remote = now
        return self.policy.initial(compute, trip, time.time())

    def _decide(self, decision: PlacementDecision) -> None:
        if decision.where != self.where:
            self.moves += 1
        self.where, self.decision = decision.where, decision
        if self.on_decision is not None:
            self.on_decision(decision)

    async def __call__(self, tensors: dict[str, np.ndarray]) -> Prediction:
        now = self._clock()
        local = self.local if self.where == EMBEDDED else None
        if local is not None and self.placement == "auto" and now - self._last_remote >= self.rules.probe_interval_s:
            local = None  # NOTE: this one goes to a worker: the trip's cost stays measured
        if local is None:
            self._last_remote = now
        self.in_flight += 1
        try:
            prediction = await (local or self.remote)(tensors)
        finally:
            self.in_flight -= 1
        self.meter.add(prediction.timings_ms, remote=local is None)
        if self.placement == "auto" and now >= self._next_review and self.meter.batches >= self.rules.min_batches:
            self._next_review = now + self.rules.review_interval_s
            self._review()
        return prediction

    def _review(self) -> None:
        compute, trip = self.meter.medians()
        decision = self.policy.review(self.where, compute, trip, time.time())
        if decision is None:
            return
        if decision.where == REMOTE or self.local is not None:
            self._decide(decision)
        elif self._loading is None:
            # NOTE: loading sessions takes a while (and holds the GIL in bursts): batches keep going to the
            # workers meanwhile, and the move happens once the pipeline is warm here.
            self._loading = asyncio.get_running_loop().create_task(self._move_here(decision))

    async def _move_here(self, decision: PlacementDecision) -> None:
        try:
            self.local = await self._load_local()
            self._decide(decision)
        except Exception as exc:  # it keeps running on the workers
            logger.warning("pipeline %r stays on the workers: loading it here failed: %s", self.name, exc)
            self._decide(PlacementDecision(REMOTE, f"loading it in the serving process failed: {exc}",
                                           decision.compute_ms, decision.trip_ms, time.time()))
        finally:
            self._loading = None

    def snapshot(self) -> dict[str, Any]:
        """The placement, where batches run now, why, and the recent costs it is judged on."""
        compute, trip = self.meter.medians()
        describe = getattr(self.local, "describe", None)
        return {"placement": self.placement, "where": self.where, "decision": self.decision.to_dict(),
                "compute_ms": compute, "trip_ms": trip, "moves": self.moves, "batches": self.meter.batches,
                "rules": asdict(self.rules), "embedded": describe() if describe is not None else None}

    async def aclose(self) -> None:
        """Stop a load under way; close the runners' own threads (batches running now finish)."""
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
        for runner in (self.local, self.remote):
            await aclose(runner)
