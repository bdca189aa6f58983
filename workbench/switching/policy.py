"""The switching decision: the best-quality variant whose latency meets the target under the current load.

Pure: fed the load, each candidate's quality and latency profile and a time, it
returns a :class:`SwitchDecision` (stay, wait or switch, and why, with the
numbers). :class:`~workbench.switching.controller.SwitchingController` runs it
on the event loop and carries the switches out.

Predicting a variant's p99 at a load of ``r`` rows/s, with ``k`` batches in
flight at most and batches of at most ``B`` rows (:func:`predict`)::

    run(b), slow(b) = median and p99 batch run time at batch size b   (its LatencyProfile)
    u(b)            = r · run(b) / (k · b)                            (utilisation: the share of time slots are busy)
    p99             = min over b ≤ B with u(b) ≤ max_utilisation of  slow(b) · (1 + u(b))

A request waits for a slot about ``u`` of a batch run, then runs in its own batch:
one run time at no load, two when the slots are always busy. A variant that
cannot keep up at any batch size (``u > max_utilisation`` for every ``b``) would
let its queue grow without bound: its p99 is infinite. For the active variant,
the p99 measured over the last seconds counts too, when it is worse.

Hysteresis, so that the choice does not flap:

- a move (to a better or a faster variant) needs the new variant to meet
  ``target · (1 - margin)``, while the active one stays as long as it meets the target;
- the variant wanted must have been wanted for ``confirm_s`` before a move;
- two moves are at least ``dwell_s`` apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from workbench.switching.profile import LatencyProfile

__all__ = ["POLICIES", "Candidate", "Estimate", "Load", "SwitchDecision", "SwitchingPolicy", "SwitchingRules",
           "batch_sizes", "predict"]

#: The policies a deployment can follow.
POLICIES = ("fixed", "best-quality-within-target")


@dataclass(frozen=True, slots=True)
class SwitchingRules:
    """The target and the hysteresis of ``best-quality-within-target``.

    Parameters
    ----------
    target_p99_ms
        The p99 latency (ms) the chosen variant must meet.
    margin
        A move needs the new variant to meet ``target_p99_ms * (1 - margin)``.
    dwell_s
        Least time between two moves.
    confirm_s
        How long a move must have been wanted before it is made.
    max_utilisation
        The busiest a variant's slots may be predicted to be (beyond, it is taken to fall behind).
    min_labels
        Labelled rows a variant needs before its live accuracy replaces the quality of its metadata.
    metric
        The metadata quality figure compared (``metadata.yaml``'s ``quality``).

    Examples
    --------
    >>> SwitchingRules(target_p99_ms=20, margin=0.2).move_below_ms
    16.0
    """

    target_p99_ms: float
    margin: float = 0.2
    dwell_s: float = 10.0
    confirm_s: float = 2.0
    max_utilisation: float = 0.9
    min_labels: int = 50
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        if not (isinstance(self.target_p99_ms, int | float) and self.target_p99_ms > 0):
            raise ValueError("target_p99_ms must be a number of milliseconds > 0")
        if not 0 <= self.margin < 1:
            raise ValueError("margin must be in [0, 1)")
        if self.dwell_s < 0 or self.confirm_s < 0:
            raise ValueError("dwell_s and confirm_s must be >= 0")
        if not 0 < self.max_utilisation <= 1:
            raise ValueError("max_utilisation must be in (0, 1]")
        if not isinstance(self.min_labels, int) or self.min_labels < 1:
            raise ValueError("min_labels must be an integer >= 1")

    @property
    def move_below_ms(self) -> float:
        return self.target_p99_ms * (1 - self.margin)


@dataclass(frozen=True, slots=True)
class Load:
    """What the deployment faces: arrivals (rows/s) and the knobs batches are formed with."""

    arrival_rps: float
    max_batch_size: int
    max_in_flight: int = 1


@dataclass(frozen=True, slots=True)
class Estimate:
    """A variant's predicted p99 at a load, the batch size it would need, and how busy it would be."""

    p99_ms: float
    batch_size: int | None
    utilisation: float | None
    capacity_rps: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """One variant as the policy sees it."""

    variant: str
    quality: float | None
    quality_source: str
    """``"feedback"`` (live accuracy), ``"metadata"`` (measured when built), or ``"unknown"``."""
    estimate: Estimate
    measured_p99_ms: float | None = None
    """The p99 measured over the last seconds; only the active variant has one."""

    @property
    def p99_ms(self) -> float:
        """What the policy goes by: the prediction, or the measured p99 when it is worse."""
        measured = self.measured_p99_ms
        if measured is None or math.isnan(measured):
            return self.estimate.p99_ms
        return max(self.estimate.p99_ms, measured)

    def as_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "quality": self.quality, "quality_source": self.quality_source,
                "predicted_p99_ms": _finite(self.estimate.p99_ms), "measured_p99_ms": _finite(self.measured_p99_ms),
                "batch_size": self.estimate.batch_size, "utilisation": _finite(self.estimate.utilisation),
                "capacity_rps": _finite(self.estimate.capacity_rps)}


@dataclass(frozen=True, slots=True)
class SwitchDecision:
    """What to serve from now on, and why."""

    time_s: float
    action: str
    """``stay``, ``wait`` (a move is wanted, the hysteresis holds it back) or ``switch``."""
    active: str
    chosen: str
    reason: str
    arrival_rps: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes a prediction considers: powers of two up to ``max_batch_size``, and it."""
    sizes = {2**i for i in range(max_batch_size.bit_length()) if 2**i <= max_batch_size}
    return sorted({*sizes, max_batch_size})


def predict(profile: LatencyProfile, load: Load, max_utilisation: float = 0.9) -> Estimate:
    """The p99 latency (ms) of a variant with ``profile`` at ``load`` (see the module docstring)."""
    if not profile:
        return Estimate(math.inf, None, None, math.nan)
    slots = max(load.max_in_flight, 1)
    best: Estimate | None = None
    capacity = 0.0
    for size in batch_sizes(load.max_batch_size):
        run_s = profile.run_ms(size, 0.5) / 1e3
        capacity = max(capacity, slots * size / run_s if run_s > 0 else math.inf)
        utilisation = load.arrival_rps * run_s / (slots * size)
        if utilisation > max_utilisation:
            continue
        p99 = profile.run_ms(size, 0.99) * (1 + utilisation)
        if best is None or p99 < best.p99_ms:
            best = Estimate(p99, size, utilisation, capacity)
    if best is None:
        return Estimate(math.inf, None, None, capacity)
    return Estimate(best.p99_ms, best.batch_size, best.utilisation, capacity)


class SwitchingPolicy:
    """``best-quality-within-target`` with its memory (the last move, the move wanted and since when).

    Parameters
    ----------
    rules
        The target and the hysteresis.

    Examples
    --------
    >>> policy = SwitchingPolicy(SwitchingRules(target_p99_ms=20, confirm_s=0, dwell_s=0))
    >>> fast = Estimate(5.0, 1, 0.1, 200.0)
    >>> slow = Estimate(30.0, 4, 0.8, 120.0)
    >>> candidates = [Candidate("fp32", 0.95, "metadata", slow), Candidate("int8", 0.93, "metadata", fast)]
    >>> policy.decide(candidates, "fp32", 100.0, now_s=1.0).chosen
    'int8'
    """

    def __init__(self, rules: SwitchingRules) -> None:
        self.rules = rules
        self.last_switch_s = -math.inf
        self._wanted: str | None = None
        self._wanted_since = 0.0

    def switched(self, now_s: float) -> None:
        """A move was made at ``now_s`` (the dwell counts from it)."""
        self.last_switch_s = now_s
        self._wanted = None

    def decide(self, candidates: Sequence[Candidate], active: str, arrival_rps: float, *,
               now_s: float) -> SwitchDecision:
        """The variant to serve, from ``candidates`` ranked best quality first (ties: as listed)."""
        rules = self.rules
        target = rules.target_p99_ms
        ranked = sorted(candidates, key=lambda c: -c.quality if c.quality is not None else math.inf)
        current = next((c for c in ranked if c.variant == active), None)

        def fits(candidate: Candidate) -> bool:
            bound = target if candidate.variant == active else rules.move_below_ms
            return candidate.p99_ms <= bound

        at = f"at {arrival_rps:.0f} rows/s"
        chosen = next((c for c in ranked if fits(c)), None)
        if chosen is None:
            chosen = min(ranked, key=lambda c: (c.p99_ms, c.variant != active))
            why = (f"no variant meets p99 <= {_ms(target)} {at}; {chosen.variant} is the fastest "
                   f"(p99 ~{_ms(chosen.p99_ms)})")
        elif chosen is current or current is None:
            why = (f"{chosen.variant} (quality {_q(chosen)}) meets the target of {_ms(target)} {at}: "
                   f"p99 ~{_ms(chosen.p99_ms)}")
            better = ranked[:ranked.index(chosen)]
            if better:
                why += "; better-ranked " + ", ".join(f"{c.variant} would be ~{_ms(c.p99_ms)} (a move needs <= "
                                                      f"{_ms(rules.move_below_ms)})" for c in better)
        elif ranked.index(chosen) < ranked.index(current):
            why = (f"{chosen.variant} (quality {_q(chosen)}) now meets p99 <= {_ms(rules.move_below_ms)} (the target "
                   f"{_ms(target)} less a {rules.margin:.0%} margin) {at}: p99 ~{_ms(chosen.p99_ms)}, and it ranks "
                   f"above {active} (quality {_q(current)})")
        else:
            why = (f"{active} is over the target {at}: p99 ~{_ms(current.p99_ms)} > {_ms(target)}; {chosen.variant} "
                   f"(quality {_q(chosen)}) is the best-ranked variant that meets it with the {rules.margin:.0%} "
                   f"margin: p99 ~{_ms(chosen.p99_ms)}")
        if chosen.variant == active:
            self._wanted = None
            return SwitchDecision(now_s, "stay", active, active, why, arrival_rps)
        if self._wanted != chosen.variant:
            self._wanted, self._wanted_since = chosen.variant, now_s
        waited = now_s - self._wanted_since
        if waited < rules.confirm_s:
            return SwitchDecision(now_s, "wait", active, chosen.variant,
                                  f"{why}; confirming for {rules.confirm_s:g} s ({waited:.1f} s so far)", arrival_rps)
        since_last = now_s - self.last_switch_s
        if since_last < rules.dwell_s:
            return SwitchDecision(now_s, "wait", active, chosen.variant,
                                  f"{why}; the last switch was {since_last:.1f} s ago (dwell {rules.dwell_s:g} s)",
                                  arrival_rps)
        return SwitchDecision(now_s, "switch", active, chosen.variant, why, arrival_rps)


def _ms(value: float) -> str:
    return "inf (cannot keep up)" if math.isinf(value) else f"{value:.1f} ms"


def _q(candidate: Candidate) -> str:
    return "unknown" if candidate.quality is None else f"{candidate.quality:g} ({candidate.quality_source})"


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 3)
