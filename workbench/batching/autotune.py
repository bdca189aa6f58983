"""The batching auto-tuner: the knobs giving the most throughput whose p99 meets a target.

Two layers, kept apart so that the decisions can be tested without a clock or a loop:

- :class:`TuningPolicy` (pure): fed one :class:`Observation` per interval (p99,
  throughput, mean batch size and queue depth measured at the current knobs), it
  keeps a table of what each configuration gave and returns a :class:`Decision`
  (the knobs from now on, and why, with the numbers).
- :class:`AutoTuner`: a task on the event loop that, every ``interval_s``, reads
  the figures of one :class:`~workbench.batching.DynamicBatcher` since its last
  change, asks the policy, and applies the answer with ``batcher.set_batching``
  only. Knobs apply at batch boundaries, so no request is dropped or stalled.

The search moves over a ladder of batch sizes (1, 2, 4, … up to a cap) and of
delays (0, 1, 2, 5, 10, … ms, at most a quarter of the target):

1. p99 above the target: if requests pile up (more queued than one round of
   batches takes), the batcher falls behind and smaller batches would lower
   throughput further, so it tries a bigger batch while growing pays, else
   settles on the highest throughput seen; otherwise it shortens the wait when
   batches are not full, else halves the batch size.
2. p99 within the target: it settles on the configuration of the table with the
   highest throughput whose p99 meets the target. Throughputs within ``margin``
   are a tie (below saturation a pipeline serves what arrives, whatever the
   knobs), and a tie goes to the smallest batch and wait: the same work at
   lower latency.
3. At that best configuration, it explores: with full batches and headroom the
   next batch size up, with partial batches and much headroom a longer wait,
   each only while that configuration is not in the table; else it holds.

Table entries older than ``memory_s`` are forgotten, so a configuration that once
broke the target (or did not pay) is tried again after the load changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from workbench.batching.batcher import DynamicBatcher

__all__ = ["AutoTuner", "Decision", "Knobs", "Observation", "Record", "TuningPolicy", "TuningRules", "decide"]

#: The delays the search moves over (ms); the longest used is a quarter of the target.
DELAY_LADDER_MS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)


@dataclass(frozen=True, slots=True, order=True)
class Knobs:
    """One configuration of the search (ordered from the least to the most aggressive)."""

    max_batch_size: int
    max_delay_ms: float

    def __str__(self) -> str:
        return f"batch {self.max_batch_size}, delay {_num(self.max_delay_ms)} ms"


@dataclass(frozen=True, slots=True)
class Observation:
    """The figures of one interval, all measured at the same knobs.

    Parameters
    ----------
    time_s
        When it was measured (any monotonic clock; used to forget old entries).
    knobs
        The knobs in force for the whole interval.
    p99_ms, throughput_rps
        End-to-end latency percentile and completed requests per second.
    mean_batch_size
        Mean rows per batch formed in the interval.
    queue_depth
        Requests waiting to be batched at the end of the interval.
    requests
        Requests completed in the interval (too few and nothing is judged).
    max_in_flight
        Batches run at once (one per worker thread).
    """

    time_s: float
    knobs: Knobs
    p99_ms: float
    throughput_rps: float
    mean_batch_size: float
    queue_depth: int
    requests: int
    max_in_flight: int = 1

    @property
    def fill(self) -> float:
        """Mean batch size as a share of ``max_batch_size``."""
        return 0.0 if math.isnan(self.mean_batch_size) else self.mean_batch_size / self.knobs.max_batch_size


@dataclass(slots=True)
class Record:
    """What one configuration gave (smoothed over the intervals it ran)."""

    p99_ms: float
    throughput_rps: float
    fill: float
    intervals: int
    last_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The knobs from now on, the move that led there, and why."""

    time_s: float
    action: str
    """``wait`` (too few requests), ``hold``, ``grow``, ``shrink`` or ``settle``."""
    previous: Knobs
    knobs: Knobs
    reason: str

    @property
    def changed(self) -> bool:
        return self.knobs != self.previous

    def as_dict(self) -> dict[str, Any]:
        return {"time_s": self.time_s, "action": self.action, "previous": asdict(self.previous),
                "knobs": asdict(self.knobs), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class TuningRules:
    """The target and the bounds of the search.

    Parameters
    ----------
    target_p99_ms
        The p99 end-to-end latency to meet.
    max_batch_cap
        Largest batch size tried.
    min_requests
        Requests an interval needs before it is judged.
    full_fill
        Mean batch size over ``max_batch_size`` from which batches count as full.
    headroom
        A bigger batch is tried only while p99 is below ``headroom * target``.
    delay_headroom
        A longer wait is tried only while p99 is below ``delay_headroom * target``.
    margin
        Throughputs closer than this share count as equal.
    memory_s
        How long a configuration's figures are trusted.
    smoothing
        Weight of the newest interval in a configuration's figures.

    Examples
    --------
    >>> TuningRules(target_p99_ms=30).batch_ladder[:4]
    (1, 2, 4, 8)
    """

    target_p99_ms: float
    max_batch_cap: int = 256
    min_requests: int = 20
    full_fill: float = 0.75
    headroom: float = 0.8
    delay_headroom: float = 0.5
    margin: float = 0.1
    memory_s: float = 60.0
    smoothing: float = 0.5

    def __post_init__(self) -> None:
        if not self.target_p99_ms > 0:
            raise ValueError("target_p99_ms must be > 0")
        if not isinstance(self.max_batch_cap, int) or self.max_batch_cap < 1:
            raise ValueError("max_batch_cap must be an integer >= 1")
        if self.min_requests < 1:
            raise ValueError("min_requests must be >= 1")
        for name in ("full_fill", "headroom", "delay_headroom", "smoothing"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")
        if not 0 <= self.margin < 1:
            raise ValueError("margin must be in [0, 1)")

    @property
    def batch_ladder(self) -> tuple[int, ...]:
        sizes = [2**i for i in range(self.max_batch_cap.bit_length()) if 2**i <= self.max_batch_cap]
        return tuple(sorted({*sizes, self.max_batch_cap}))

    @property
    def delay_ladder_ms(self) -> tuple[float, ...]:
        # NOTE: a wait of a quarter of the target leaves the rest to the batch's run and the queue.
        return tuple(d for d in DELAY_LADDER_MS if d <= self.target_p99_ms / 4)


# -- the decisions (pure) --------------------------------------------------------------


def decide(observation: Observation, table: Mapping[Knobs, Record], rules: TuningRules) -> Decision:
    """The next knobs given this interval's figures and the table (which already holds them)."""
    now, knobs, target = observation.time_s, observation.knobs, rules.target_p99_ms

    def move(action: str, to: Knobs, reason: str) -> Decision:
        return Decision(now, action, knobs, to, reason)

    if observation.requests < rules.min_requests or knobs not in table:
        return move("wait", knobs, f"{observation.requests} requests since the last change (need "
                                   f"{rules.min_requests} to judge): keeping {knobs}")
    current = table[knobs]
    p99, fill = current.p99_ms, current.fill
    size = knobs.max_batch_size
    bigger = Knobs(int(_step(rules.batch_ladder, size, up=True) or size), knobs.max_delay_ms)
    smaller = Knobs(int(_step(rules.batch_ladder, size, up=False) or size), knobs.max_delay_ms)
    shorter = Knobs(size, _step(rules.delay_ladder_ms, knobs.max_delay_ms, up=False) or 0.0)
    longer = Knobs(size, _step(rules.delay_ladder_ms, knobs.max_delay_ms, up=True) or knobs.max_delay_ms)
    at = f"p99 {_num(p99)} ms > target {_num(target)} ms at batch {size}"

    if p99 > target:
        if observation.queue_depth > size * observation.max_in_flight:
            # NOTE: grow only while growing paid: the current knobs gave the most throughput seen.
            fastest = max(table, key=lambda k: (table[k].throughput_rps, k == knobs))
            if fastest == knobs and bigger != knobs and bigger not in table:
                return move("grow", bigger, f"{at} with {observation.queue_depth} requests queued: the batcher "
                                            f"falls behind, doubling to {bigger.max_batch_size} for throughput")
            why = (f"{at} with {observation.queue_depth} requests queued: the load exceeds what meets the target; "
                   f"{fastest} gave the most throughput seen ({_num(table[fastest].throughput_rps)} rps), "
                   f"more workers are needed to meet it")
            return move("settle", fastest, why) if fastest != knobs else move("hold", knobs, why)
        if fill < rules.full_fill and shorter != knobs:
            return move("shrink", shorter, f"{at} with batches {fill:.0%} full: the wait costs more than it "
                                           f"fills, delay {_num(knobs.max_delay_ms)} -> "
                                           f"{_num(shorter.max_delay_ms)} ms")
        if smaller != knobs:
            return move("shrink", smaller, f"{at}: halving to {smaller.max_batch_size}")
        if shorter != knobs:
            return move("shrink", shorter, f"{at}: delay {_num(knobs.max_delay_ms)} -> "
                                           f"{_num(shorter.max_delay_ms)} ms")
        return move("hold", knobs, f"{at} even with no wait: the load needs more workers to meet the target")

    within = f"p99 {_num(p99)} ms <= target {_num(target)} ms at batch {size}"
    # NOTE: the current knobs meet the target, so the table holds one such configuration at least.
    meeting = [k for k, r in table.items() if r.p99_ms <= target]
    top = max(table[k].throughput_rps for k in meeting)
    ties = [k for k in meeting if table[k].throughput_rps >= top * (1 - rules.margin)]
    best = min(ties)
    found = table[best]
    if best != knobs and knobs not in ties:
        return move("settle", best, f"{best} met the target (p99 {_num(found.p99_ms)} ms) with "
                                    f"{_num(found.throughput_rps)} rps against {_num(current.throughput_rps)} rps "
                                    f"at {knobs}: moving there")
    if best != knobs:
        return move("settle", best, f"{knobs} gave no more throughput than {best} ({_num(current.throughput_rps)} "
                                    f"vs {_num(found.throughput_rps)} rps, both within {_num(target)} ms): back to "
                                    f"the smaller one for lower latency")
    # NOTE: explore only from the best configuration: a step that did not pay is not followed by another.
    if fill >= rules.full_fill and p99 <= rules.headroom * target and bigger != knobs and bigger not in table:
        return move("grow", bigger, f"{within} with batches {fill:.0%} full and headroom: doubling to "
                                    f"{bigger.max_batch_size}")
    if (fill < rules.full_fill and p99 <= rules.delay_headroom * target and longer != knobs
            and longer not in table):
        return move("grow", longer, f"{within} with batches {fill:.0%} full and headroom: a longer wait may fill "
                                    f"them, delay {_num(knobs.max_delay_ms)} -> {_num(longer.max_delay_ms)} ms")
    return move("hold", knobs, f"{within}, {_num(current.throughput_rps)} rps: the most throughput "
                               f"seen within the target")


def _step(ladder: tuple[float, ...], value: float, *, up: bool) -> float | None:
    """The next rung above (or below) ``value``, which need not be on the ladder; ``None`` at the end."""
    rungs = [r for r in ladder if (r > value if up else r < value)]
    if not rungs:
        return None
    return min(rungs) if up else max(rungs)


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}".removesuffix(".0")


class TuningPolicy:
    """The table of what each configuration gave, and the decisions drawn from it (no clock, no loop).

    Examples
    --------
    >>> policy = TuningPolicy(TuningRules(target_p99_ms=30, min_requests=1))
    >>> decision = policy.observe(Observation(0.0, Knobs(32, 5.0), p99_ms=41.0, throughput_rps=900,
    ...                                       mean_batch_size=32, queue_depth=0, requests=100))
    >>> decision.reason
    'p99 41 ms > target 30 ms at batch 32: halving to 16'
    """

    def __init__(self, rules: TuningRules) -> None:
        self.rules = rules
        self.table: dict[Knobs, Record] = {}

    def observe(self, observation: Observation) -> Decision:
        """Remember the figures (when there are enough of them) and decide."""
        now = observation.time_s
        self.table = {k: r for k, r in self.table.items()
                      if k == observation.knobs or now - r.last_s <= self.rules.memory_s}
        if observation.requests >= self.rules.min_requests and not math.isnan(observation.p99_ms):
            self._remember(observation)
        return decide(observation, self.table, self.rules)

    def forget(self) -> None:
        """Drop the table (the figures no longer describe the pipeline, e.g. the workers changed)."""
        self.table.clear()

    def _remember(self, observation: Observation) -> None:
        known = self.table.get(observation.knobs)
        if known is None:
            self.table[observation.knobs] = Record(observation.p99_ms, observation.throughput_rps,
                                                   observation.fill, 1, observation.time_s)
            return
        weight = self.rules.smoothing
        known.p99_ms = weight * observation.p99_ms + (1 - weight) * known.p99_ms
        known.throughput_rps = weight * observation.throughput_rps + (1 - weight) * known.throughput_rps
        known.fill = weight * observation.fill + (1 - weight) * known.fill
        known.intervals += 1
        known.last_s = observation.time_s


# -- the task on the event loop --------------------------------------------------------


class AutoTuner:
    """Move one batcher's ``max_batch_size`` and ``max_delay_ms`` towards a p99 target.

    Parameters
    ----------
    batcher
        The batcher to tune; only its :meth:`~DynamicBatcher.set_batching` is called.
    rules
        The target and the bounds of the search.
    interval_s
        Time between two decisions.
    on_decision
        Called with each decision that changes the knobs (e.g. to record an event).
    clock
        Seconds of a monotonic clock, the one the batcher's statistics use.

    Examples
    --------
    >>> tuner = AutoTuner(batcher, TuningRules(target_p99_ms=30))   # doctest: +SKIP
    >>> tuner.start()                                               # doctest: +SKIP
    >>> tuner.explain()                                             # doctest: +SKIP
    'batch 16, delay 5 ms for p99 <= 30 ms: p99 41 ms > target 30 ms at batch 32: halving to 16'
    """

    def __init__(self, batcher: DynamicBatcher, rules: TuningRules, *, interval_s: float = 2.0,
                 on_decision: Callable[[Decision], object] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be > 0")
        self.batcher = batcher
        self.policy = TuningPolicy(rules)
        self.interval_s = interval_s
        self._on_decision = on_decision
        self._clock = clock
        self.decisions: deque[Decision] = deque(maxlen=50)
        self.last: Decision | None = None
        self._task: asyncio.Task[None] | None = None
        self._knobs, self._in_flight = self._read_knobs()
        self._since = clock()

    @property
    def rules(self) -> TuningRules:
        return self.policy.rules

    def retarget(self, target_p99_ms: float) -> None:
        """Aim at another p99; the table stays (what each configuration gave has not changed)."""
        self.policy.rules = replace(self.policy.rules, target_p99_ms=target_p99_ms)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start deciding every ``interval_s`` (call it from the batcher's event loop)."""
        if not self.running:
            self._since = self._clock()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"autotune-{self.batcher.name}")

    def cancel(self) -> None:
        """Stop deciding; the knobs stay where they are."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Like :meth:`cancel`, and wait until the task has ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.tick()
            except Exception as exc:  # NOTE: a failed decision leaves the knobs as they are; the next one retries
                self.last = Decision(self._clock(), "hold", self._knobs, self._knobs, f"decision failed: {exc!r}")

    def tick(self) -> Decision:
        """Read the figures since the last change, decide, and apply the decision."""
        now = self._clock()
        knobs, in_flight = self._read_knobs()
        if (knobs, in_flight) != (self._knobs, self._in_flight):
            # NOTE: someone else changed the knobs (a user, or the engine following the workers):
            # figures from before describe another configuration.
            if in_flight != self._in_flight:
                self.policy.forget()
            self._knobs, self._in_flight, self._since = knobs, in_flight, self._settled_after(now)
        stats = self.batcher.stats
        span = min(now - self._since, stats.window_s)
        figures: dict[str, Any] = stats.recent(span) if span > 0 else {
            "requests": 0, "throughput_rps": 0.0, "latency_ms": {"p99": math.nan}}
        sizes = stats.batch_sizes.values(span) if span > 0 else None
        observation = Observation(
            time_s=now, knobs=knobs, max_in_flight=in_flight, queue_depth=self.batcher.queue_depth,
            p99_ms=figures["latency_ms"]["p99"], throughput_rps=figures["throughput_rps"],
            mean_batch_size=float(sizes.mean()) if sizes is not None and sizes.size else math.nan,
            requests=figures["requests"])
        decision = self.policy.observe(observation)
        self.last = decision
        if decision.action != "wait":
            # NOTE: figures are used once: the next decision looks at what happens from now on.
            self._since = now
        if decision.changed:
            self.batcher.set_batching(max_batch_size=decision.knobs.max_batch_size,
                                      max_delay_ms=decision.knobs.max_delay_ms)
            self._knobs, self._since = decision.knobs, self._settled_after(now)
            self.decisions.append(decision)
            if self._on_decision is not None:
                self._on_decision(decision)
        return decision

    def _settled_after(self, now: float) -> float:
        """When the figures start to describe knobs changed at ``now``.

        Requests answered just after a change mostly ran under the old knobs; a p99 after the
        change, nearly all of them ran under the new ones.
        """
        recent_p99_ms = self.batcher.stats.latency_ms.percentiles(last_s=self.interval_s)["p99"]
        return now + (0.0 if math.isnan(recent_p99_ms) else min(recent_p99_ms / 1000, self.interval_s / 2))

    def _read_knobs(self) -> tuple[Knobs, int]:
        config = self.batcher.config
        return Knobs(config.max_batch_size, config.max_delay_ms), config.max_in_flight

    def explain(self) -> str:
        """The current choice and why, in one sentence."""
        knobs, _ = self._read_knobs()
        reason = self.last.reason if self.last is not None else "no decision yet: the first comes after one interval"
        return f"{knobs} for p99 <= {_num(self.rules.target_p99_ms)} ms: {reason}"

    def snapshot(self) -> dict[str, Any]:
        """Plain data for ``stats()["autotune"]``: target, choice, reason, recent decisions and the table."""
        knobs, _ = self._read_knobs()
        return {
            "running": self.running,
            "target_p99_ms": self.rules.target_p99_ms,
            "knobs": asdict(knobs),
            "action": self.last.action if self.last is not None else None,
            "reason": self.explain(),
            "decisions": [d.as_dict() for d in list(self.decisions)[-10:]],
            "table": [{"knobs": asdict(k), **asdict(r)} for k, r in sorted(self.policy.table.items())],
        }
