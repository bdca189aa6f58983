"""The switching loop of one deployment: profiles learnt from its traffic, a decision every interval, swaps.

:class:`SwitchingController` watches every answered request of its deployment
(an :class:`~workbench.engine.Observer`, reported as ``stats(name)["switching"]``):
the batches each variant served go into that variant's
:class:`~workbench.switching.profile.LatencyProfile`, which is kept across swaps.
Every ``interval_s`` it measures the load, ranks the candidates by quality,
predicts each one's p99 at that load, asks the
:class:`~workbench.switching.policy.SwitchingPolicy`, and carries a switch out with
:meth:`Engine.swap <workbench.engine.Engine.swap>` (load and warm first, no request
dropped). Every switch is an event of the deployment, with its reason.

Profiling a variant that has not served yet: when the policy is set, each
candidate with no profile runs a short calibration (a few batches of each size
up to ``max_batch_size``, on requests made up by the traffic lab's
:func:`~workbench.traffic.request_maker`) as a side deployment of its own on the
backend (:mod:`workbench.switching.sidecar`), so the profile is measured where the
batches will run. It competes for the CPU with live traffic for a second or two;
live batches then keep the profiles current.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from workbench.errors import WorkbenchError
from workbench.pipeline.graph import Prediction
from workbench.pipeline.inference import OnnxStage
from workbench.switching.policy import (
    POLICIES,
    Candidate,
    Load,
    SwitchDecision,
    SwitchingPolicy,
    SwitchingRules,
    batch_sizes,
    predict,
)
from workbench.switching.profile import BatchGrouper, LatencyProfile
from workbench.switching.sidecar import deploy_sidecar, variant_stage

if TYPE_CHECKING:
    from workbench.engine import Deployment, Engine

__all__ = ["SwitchingController", "set_policy"]

#: What quality is read by while the policy is ``fixed`` (there is no target then).
_DEFAULT_RULES = SwitchingRules(target_p99_ms=1.0)
#: Requests the active variant must have answered since the last switch before its measured p99 counts.
_MIN_MEASURED = 20


class SwitchingController:
    """Follow a switching policy for one deployment; see the module docstring.

    Parameters
    ----------
    engine, deployment
        Whose variants are switched (with ``engine.swap``).
    stage
        The inference stage whose variant is switched.
    candidates
        The variants to choose from, in order of preference where qualities are equal.
    interval_s
        Time between two decisions.
    window_s
        How far back the load (arrivals) and the active variant's measured p99 look.
    clock
        Seconds of a monotonic clock (the batcher's statistics use ``time.monotonic``).
    """

    def __init__(self, engine: Engine, deployment: Deployment, stage: str, candidates: Sequence[str], *,
                 interval_s: float = 1.0, window_s: float = 3.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval_s > 0 or not window_s > 0:
            raise ValueError("interval_s and window_s must be > 0")
        self.engine = engine
        self.deployment = deployment
        self.stage = stage
        self.candidates = list(candidates)
        self.interval_s = interval_s
        self.window_s = window_s
        self._clock = clock
        self.policy_name = "fixed"
        self.policy: SwitchingPolicy | None = None
        self.profiles: dict[str, LatencyProfile] = {v: LatencyProfile() for v in self.candidates}
        self._grouper = BatchGrouper()
        self._arrivals: deque[tuple[float, int, int, int]] = deque()
        self._requests_seen = 0
        self._rows_seen = 0
        self._metadata_quality: dict[str, dict[str, float]] = {}
        self.last: SwitchDecision | None = None
        self.last_candidates: list[Candidate] = []
        self.decisions: deque[SwitchDecision] = deque(maxlen=20)
        self.switches = 0
        self._task: asyncio.Task[None] | None = None
        self._ticking: asyncio.Future[SwitchDecision] | None = None
        stage_object = deployment.pipeline.stage(stage)
        assert isinstance(stage_object, OnnxStage)
        self._model = stage_object.model
        repository = deployment.pipeline.repository
        for variant in self.candidates:
            metadata = repository.metadata(self._model, variant) if repository is not None else None
            self._metadata_quality[variant] = dict(metadata.quality) if metadata is not None else {}

    # -- observer ----------------------------------------------------------------------
    def observe(self, tensors: Mapping[str, Any], prediction: Prediction) -> None:
        variant = prediction.variants.get(self.stage) or self.active
        rows = next(iter(tensors.values())).shape[0]
        self._requests_seen += 1
        self._rows_seen += rows
        self._grouper.add(variant, rows, prediction.timings_ms)

    def report(self) -> dict[str, Any]:
        """Plain data for ``stats(name)["switching"]``."""
        rules = self.policy.rules if self.policy is not None else None
        return {
            "policy": self.policy_name,
            "running": self.running,
            "stage": self.stage,
            "active": self.active,
            "target_p99_ms": rules.target_p99_ms if rules is not None else None,
            "rules": {k: getattr(rules, k) for k in ("margin", "dwell_s", "confirm_s", "max_utilisation",
                                                     "min_labels", "metric")} if rules is not None else None,
            "candidates": [c.as_dict() for c in self.last_candidates],
            "profiles": {v: {"batches": p.batches, "by_batch_size": p.snapshot()} for v, p in self.profiles.items()},
            "decision": self.last.as_dict() if self.last is not None else None,
            "reason": self.last.reason if self.last is not None else "no decision yet",
            "switches": self.switches,
            "decisions": [d.as_dict() for d in self.decisions],
        }

    # -- settings ----------------------------------------------------------------------
    @property
    def active(self) -> str:
        return self.deployment.variants[self.stage]

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def follow(self, policy: str, rules: SwitchingRules | None) -> None:
        """Follow ``policy`` from the next decision (``rules`` for ``best-quality-within-target``)."""
        self.policy_name = policy
        if policy == "fixed":
            self.policy = None
        elif self.policy is None:
            self.policy = SwitchingPolicy(rules or _missing_rules())
        else:
            # NOTE: the memory (last switch, move wanted) stays: a new target is no reason to flap.
            self.policy.rules = rules or self.policy.rules

    async def calibrate(self, runs: int = 5, *, only_missing: bool = True) -> dict[str, int]:
        """Measure the candidates' batch run times at each batch size, each on a side deployment.

        Returns the batches measured per variant (none for a variant that already has a profile,
        with ``only_missing``).
        """
        from workbench.traffic.requests import request_maker

        if runs < 1:
            raise ValueError("runs must be an integer >= 1")
        deployment = self.deployment
        make = request_maker(deployment.pipeline, seed=1)
        sizes = batch_sizes(deployment.batcher.config.max_batch_size)
        variants = [v for v in self.candidates if not (only_missing and self.profiles[v])]
        sidecars = {}
        try:
            for variant in variants:
                pipeline = deployment.pipeline.with_variant(variant, self.stage)
                sidecars[variant] = await deploy_sidecar(self.engine.backend, deployment.name, "calibrate",
                                                         pipeline, deployment.placement)
                await sidecars[variant].runner(make(1))  # NOTE: a first run pays for lazy set-up; not counted
            for rows in sizes:
                tensors = deployment.pipeline.validate(make(rows))
                # NOTE: the variants take turns, batch by batch, so that a burst of load from elsewhere on the
                # machine slows them alike instead of making one look faster than it is.
                for _ in range(runs):
                    for variant, sidecar in sidecars.items():
                        began = time.perf_counter()
                        await sidecar.runner(tensors)
                        self.profiles[variant].add(rows, (time.perf_counter() - began) * 1e3)
        finally:
            for sidecar in sidecars.values():
                await sidecar.retire()
        return {variant: len(sizes) * runs for variant in variants}

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"switching-{self.deployment.name}")

    async def aclose(self) -> None:
        """Stop deciding (a switch under way finishes first: it is awaited, not cancelled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ticking, self._ticking = self._ticking, None
        if ticking is not None and not ticking.done():
            await asyncio.wait([ticking])
        if ticking is not None and not ticking.cancelled() and ticking.exception() is not None:
            self.deployment.record("switch_failed", error=str(ticking.exception()))

    # -- the loop ----------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            # NOTE: shielded: a swap that has begun is not cut short by a stop (aclose waits for it), so
            # the generation it replaced is retired.
            self._ticking = asyncio.ensure_future(self.tick())
            try:
                await asyncio.shield(self._ticking)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NOTE: a failed decision or swap leaves the variant as it is; the next retries
                now = self._clock()
                self.last = SwitchDecision(now, "stay", self.active, self.active, f"decision failed: {exc!r}", math.nan)
                self.deployment.record("switch_failed", error=str(exc))
            self._ticking = None

    def _learn(self) -> None:
        for variant, rows, run_ms in self._grouper.drain():
            profile = self.profiles.get(variant)
            if profile is not None:
                profile.add(rows, run_ms)

    def _arrival_rps(self, now: float) -> float:
        """Rows arriving per second over the last ``window_s``: requests answered, failed, refused or queued,
        times the rows of a request."""
        batcher = self.deployment.batcher
        stats = batcher.stats
        arrived = stats.requests_total + stats.errors_total + stats.rejected_total + batcher.queue_depth
        self._arrivals.append((now, arrived, self._requests_seen, self._rows_seen))
        while len(self._arrivals) > 2 and now - self._arrivals[1][0] >= self.window_s:
            self._arrivals.popleft()
        first_s, first, requests, rows = self._arrivals[0]
        if now <= first_s:
            return 0.0
        answered = self._requests_seen - requests
        rows_per_request = (self._rows_seen - rows) / answered if answered else 1.0
        return (arrived - first) / (now - first_s) * rows_per_request

    def _quality(self, variant: str, rules: SwitchingRules) -> tuple[float | None, str]:
        inference = self.deployment.pipeline.inference_stages
        # NOTE: the feedback loop counts by the variant of the first inference stage (the V2 model version).
        if inference and inference[0].name == self.stage:
            live = self.engine.quality(self.deployment.name)["variants"].get(variant)
            if live is not None and live["count"] >= rules.min_labels and live["accuracy"] is not None:
                return float(live["accuracy"]), "feedback"
        value = self._metadata_quality.get(variant, {}).get(rules.metric)
        return (float(value), "metadata") if value is not None else (None, "unknown")

    def _measured_p99_ms(self, now: float) -> float | None:
        policy = self.policy
        since = now - policy.last_switch_s if policy is not None else math.inf
        # NOTE: the first window after a switch is left out: its answers include the backlog that the variant
        # switched away from left behind, which says nothing of the variant now serving.
        span = min(self.window_s, since - self.window_s)
        if span < self.window_s / 2:
            return None
        latency = self.deployment.batcher.stats.latency_ms
        if latency.values(span).size < _MIN_MEASURED:
            return None
        return latency.percentiles((99,), last_s=span)["p99"]

    async def tick(self) -> SwitchDecision:
        """Learn from the batches served, measure the load, decide, and switch if the policy says so."""
        now = self._clock()
        self._learn()
        config = self.deployment.batcher.config
        load = Load(self._arrival_rps(now), config.max_batch_size, config.max_in_flight)
        rules = self.policy.rules if self.policy is not None else None
        active = self.active
        max_utilisation = rules.max_utilisation if rules is not None else 0.9
        candidates = []
        for variant in self.candidates:
            quality, source = self._quality(variant, rules or _DEFAULT_RULES)
            estimate = predict(self.profiles[variant], load, max_utilisation)
            candidates.append(Candidate(variant, quality, source, estimate,
                                        self._measured_p99_ms(now) if variant == active else None))
        self.last_candidates = candidates
        if self.policy is None:
            decision = SwitchDecision(now, "stay", active, active, "policy 'fixed': the variant changes only when "
                                      "swapped by hand", load.arrival_rps)
        else:
            decision = self.policy.decide(candidates, active, load.arrival_rps, now_s=now)
        self.last = decision
        if decision.action != "stay":
            self.decisions.append(decision)
        if decision.action == "switch" and self.policy is not None:
            chosen = next(c for c in candidates if c.variant == decision.chosen)
            await self.engine.swap(self.deployment.name, decision.chosen, self.stage)
            self.policy.switched(self._clock())
            self.switches += 1
            self.deployment.record("switch", before=active, after=decision.chosen, reason=decision.reason,
                                   arrival_rps=round(load.arrival_rps, 1),
                                   predicted_p99_ms=chosen.as_dict()["predicted_p99_ms"],
                                   target_p99_ms=self.policy.rules.target_p99_ms)
        return decision


def _missing_rules() -> NoReturn:
    raise ValueError("policy 'best-quality-within-target' needs a latency target: pass target_p99_ms=... or "
                     "set one with set_latency_target")


async def set_policy(engine: Engine, deployment: Deployment, policy: str, *, target_p99_ms: float | None = None,
                     stage: str | None = None, candidates: Sequence[str] | None = None, calibrate: bool = True,
                     interval_s: float = 1.0, window_s: float = 3.0, **rules: Any) -> dict[str, Any]:
    """Make ``deployment`` follow ``policy``; see :meth:`Engine.set_policy <workbench.engine.Engine.set_policy>`."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    if not interval_s > 0 or not window_s > 0:
        raise ValueError("interval_s and window_s must be > 0")
    controller = deployment.observers.get("switching")
    if not isinstance(controller, SwitchingController):
        controller = None
    switching_rules = None
    if policy != "fixed":
        target = target_p99_ms if target_p99_ms is not None else deployment.latency_target_ms
        if target is None:
            _missing_rules()
        switching_rules = SwitchingRules(target_p99_ms=float(target), **rules)  # NOTE: checked before any change
    elif rules:
        raise ValueError(f"policy 'fixed' takes no rules (got {sorted(rules)})")
    chosen_stage = variant_stage(deployment, stage if stage is not None else (
        controller.stage if controller is not None else None))
    repository = deployment.pipeline.repository
    known = repository.variants(chosen_stage.model) if repository is not None else [chosen_stage.variant]
    if candidates is not None:
        unknown = [v for v in candidates if v not in known]
        if unknown or not candidates:
            raise WorkbenchError(f"candidates must be variants of {chosen_stage.model!r}: {known} (not {unknown})", 404)
        wanted = list(dict.fromkeys(candidates))
    elif controller is not None and controller.stage == chosen_stage.name:
        wanted = controller.candidates
    else:
        wanted = [chosen_stage.variant, *(v for v in known if v != chosen_stage.variant)]
    if controller is None or controller.stage != chosen_stage.name or controller.candidates != wanted:
        previous = controller
        controller = SwitchingController(engine, deployment, chosen_stage.name, wanted, interval_s=interval_s,
                                         window_s=window_s)
        if previous is not None:
            await previous.aclose()
            # NOTE: what a variant costs does not depend on the policy: the profiles are carried over.
            for variant, profile in previous.profiles.items():
                if variant in controller.profiles:
                    controller.profiles[variant] = profile
    else:
        controller.interval_s, controller.window_s = interval_s, window_s
    controller.follow(policy, switching_rules)
    if calibrate and policy != "fixed":
        measured = await controller.calibrate()
        if measured:
            deployment.record("switching_calibrated", batches=measured)
    deployment.observers["switching"] = controller
    controller.start()
    deployment.record("switching_policy", policy=policy, stage=controller.stage, candidates=controller.candidates,
                      target_p99_ms=switching_rules.target_p99_ms if switching_rules is not None else None)
    return controller.report()
