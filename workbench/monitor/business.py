"""Business metrics: counts and rates of a pipeline's business signals per variant, and a flag on a sudden shift.

A pipeline declares its business signals (:mod:`workbench.pipeline.signals`): a
label, a risk bucket, a score above a threshold. Once it is deployed, a
:class:`BusinessMonitor` watches every answered request (an
:class:`~workbench.engine.Observer`) and keeps, per variant:

* the **current window**: the last ``window_s`` seconds;
* the **baseline**: the ``baseline_windows`` windows before it.

Each holds, per signal, how many rows took each value (``low``/``medium``/``high``,
``above``/``below`` a threshold) and so their shares: the share of high-risk
decisions, the label mix, an approval rate.

Shift test. A value's share is flagged as shifted when a two-proportion z-test
of the current window against the baseline gives ``|z| >= z`` (default 4: about
one false alarm in 16,000 tests of an unchanged share), the share moved by at
least ``min_change`` (default 0.05), and both sides hold at least ``min_count``
rows (default 100). The last two keep the flag from flapping on small samples or
on tiny, significant-but-irrelevant moves in heavy traffic::

    z = (p_current - p_baseline) / sqrt(p (1 - p) (1 / n_current + 1 / n_baseline))

with ``p`` the share over both sides pooled. Until the baseline holds ``min_count``
rows the signal reads ``"collecting"``.

Cost. ``observe`` appends a reference to the request's outputs; counting happens
when someone reads (``report``: stats, the dashboard, a ``/metrics`` scrape), into
time buckets of a tenth of a window, so each request is counted once however often
it is read. When nobody reads, ``observe`` counts what is noted every
:data:`COUNT_AT` requests, so memory stays bounded (a few ms, once per 4096 requests).

Examples
--------
>>> from workbench.pipeline.signals import BusinessSignal
>>> now = [0.0]
>>> monitor = BusinessMonitor([BusinessSignal("risk", "risk_bucket")], rule=ShiftRule(min_count=10),
...                           clock=lambda: now[0])
>>> monitor.record({"risk_bucket": np.array(["low"] * 45 + ["high"] * 5)}, {"model": "gbt"})
>>> now[0] = 120.0
>>> monitor.record({"risk_bucket": np.array(["low"] * 20 + ["high"] * 30)}, {"model": "gbt"})
>>> report = monitor.report()
>>> report["shift"], report["variants"]["gbt"]["signals"]["risk"]["rates"]["high"]
(True, 0.6)
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from workbench.batching.batch import AnsweredBatch
    from workbench.pipeline.graph import Prediction
    from workbench.pipeline.signals import BusinessSignal

__all__ = ["ABOVE", "BELOW", "BusinessCollector", "BusinessMonitor", "ShiftRule", "two_proportion_z", "variant_key"]

#: The two values a threshold signal counts.
ABOVE, BELOW = "above", "below"

#: Time buckets per window: the current window slides by a tenth of itself.
BUCKETS_PER_WINDOW = 10
#: Requests noted and not counted after which ``observe`` counts them itself (when nobody reads for long).
COUNT_AT = 4096


@dataclass(frozen=True, slots=True)
class ShiftRule:
    """When a share counts as shifted: ``|z| >= z``, moved by ``min_change``, ``min_count`` rows each side."""

    z: float = 4.0
    min_change: float = 0.05
    min_count: int = 100

    def __post_init__(self) -> None:
        if not self.z > 0:
            raise ValueError("z must be > 0")
        if not 0 <= self.min_change < 1:
            raise ValueError("min_change must be between 0 and 1 (a change of share)")
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int) or self.min_count < 1:
            raise ValueError("min_count must be an integer >= 1")


def two_proportion_z(hits_a: int, rows_a: int, hits_b: int, rows_b: int) -> float:
    """The z statistic of share ``a`` against share ``b`` (pooled variance); 0 when it is undefined.

    Examples
    --------
    >>> round(two_proportion_z(60, 100, 40, 100), 3)
    2.828
    """
    if rows_a <= 0 or rows_b <= 0:
        return 0.0
    pooled = (hits_a + hits_b) / (rows_a + rows_b)
    variance = pooled * (1.0 - pooled) * (1.0 / rows_a + 1.0 / rows_b)
    if variance <= 0.0:
        return 0.0  # NOTE: every row the same value on both sides: nothing moved
    return (hits_a / rows_a - hits_b / rows_b) / math.sqrt(variance)


def variant_key(variants: Mapping[str, str]) -> str:
    """How a request's variants are named in business metrics: ``"gbt"``, or ``"a+b"`` for several stages."""
    return "+".join(variants.values())


@dataclass(slots=True)
class _Bucket:
    """Rows answered in one slice of time, and per signal how many took each value."""

    rows: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=dict)


class BusinessMonitor:
    """A deployment's business signals counted per variant, current window against baseline.

    Parameters
    ----------
    signals
        The signals to count (the pipeline's ``business`` declaration).
    window_s
        Length of the current window, in seconds.
    baseline_windows
        Windows before the current one that form the baseline.
    rule
        When a share counts as shifted (see the module docstring).
    variants
        The deployment's active variants, for requests whose prediction does not name them.
    clock
        Seconds, monotonic.
    """

    def __init__(self, signals: Sequence[BusinessSignal], *, window_s: float = 60.0, baseline_windows: int = 10,
                 rule: ShiftRule | None = None, variants: Callable[[], Mapping[str, str]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not signals:
            raise ValueError("a business monitor needs at least one signal")
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        if isinstance(baseline_windows, bool) or not isinstance(baseline_windows, int) or baseline_windows < 1:
            raise ValueError("baseline_windows must be an integer >= 1")
        self.signals = tuple(signals)
        self.window_s = float(window_s)
        self.baseline_windows = baseline_windows
        self.rule = rule or ShiftRule()
        self._variants = variants or dict
        self._clock = clock
        self._bucket_s = self.window_s / BUCKETS_PER_WINDOW
        self._outputs = tuple(dict.fromkeys(s.output for s in self.signals))
        #: ``(time, variants, outputs)`` per request answered and not counted yet.
        self._pending: deque[tuple[float, Mapping[str, str], Mapping[str, Any]]] = deque()
        self._buckets: dict[str, dict[int, _Bucket]] = {}
        # NOTE: report may run on a scrape thread while the loop observes: appends and poplefts of a deque are
        # atomic, and the counting itself is serialised by this lock.
        self._lock = threading.Lock()

    # -- the request path ----------------------------------------------------------------
    def observe(self, tensors: Mapping[str, Any], prediction: Prediction) -> None:
        """Note one answered request (an append: it is counted when read)."""
        self.record(prediction.outputs, prediction.variants)

    def observe_batch(self, batch: AnsweredBatch) -> None:
        """Note every request of one answered batch at once (its merged outputs: one append)."""
        self.record(batch.outputs, batch.variants)

    def record(self, outputs: Mapping[str, Any], variants: Mapping[str, str] | None = None) -> None:
        """Note the outputs of one request answered by ``variants`` (what :meth:`observe` does with a prediction)."""
        self._pending.append((self._clock(), variants or {}, outputs))
        if len(self._pending) >= COUNT_AT:
            self._count_now()

    def _count_now(self) -> None:
        # NOTE: a reader holding the lock is counting these very requests: no need to wait for it.
        if self._lock.acquire(blocking=False):
            try:
                self._count_pending()
            finally:
                self._lock.release()

    # -- reading -------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Counts and shares per variant and signal, current window against baseline, and the shift flags."""
        with self._lock:
            self._count_pending()
            now = self._index(self._clock())
            first_current = now - BUCKETS_PER_WINDOW + 1
            self._forget(first_current - self.baseline_windows * BUCKETS_PER_WINDOW)
            variants = {variant: self._variant_report(buckets, first_current)
                        for variant, buckets in sorted(self._buckets.items())}
        shifts = [{"variant": variant, "signal": name, "value": value, **entry["tests"][value]}
                  for variant, report in variants.items() for name, entry in report["signals"].items()
                  for value in entry["shifted"]]
        return {
            "window_s": self.window_s, "baseline_s": self.window_s * self.baseline_windows,
            "rule": asdict(self.rule),
            "signals": [s.to_dict() for s in self.signals],
            "shift": bool(shifts),
            "shifts": shifts,
            "variants": variants,
        }

    def _index(self, at: float) -> int:
        return math.floor(at / self._bucket_s)

    def _count_pending(self) -> None:
        pending = self._pending
        while pending:
            at, variants, outputs = pending.popleft()
            key = variant_key(variants or self._variants())
            bucket = self._buckets.setdefault(key, {}).setdefault(self._index(at), _Bucket())
            rows = 0
            for signal in self.signals:
                values = outputs.get(signal.output)
                if values is None:
                    continue
                array = np.asarray(values).reshape(-1)
                rows = max(rows, array.size)
                counts = bucket.counts.setdefault(signal.name, Counter())
                if array.size == 1:
                    # NOTE: the common one-row request, without np.unique's sort (a tenth of the time)
                    value = array[0]
                    counts[(ABOVE if float(value) > signal.above else BELOW) if signal.above is not None
                           else str(value)] += 1
                elif signal.above is not None:
                    above = int(np.count_nonzero(array.astype(np.float64) > signal.above))
                    counts[ABOVE] += above
                    counts[BELOW] += array.size - above
                else:
                    found, times = np.unique(array.astype(str), return_counts=True)
                    counts.update(dict(zip(found.tolist(), times.tolist())))
            bucket.rows += rows

    def _forget(self, oldest: int) -> None:
        for variant in list(self._buckets):
            buckets = self._buckets[variant]
            for index in [i for i in buckets if i < oldest]:
                del buckets[index]
            if not buckets:
                del self._buckets[variant]

    def _variant_report(self, buckets: Mapping[int, _Bucket], first_current: int) -> dict[str, Any]:
        current, baseline = _Bucket(), _Bucket()
        for index, bucket in buckets.items():
            side = current if index >= first_current else baseline
            side.rows += bucket.rows
            for name, counts in bucket.counts.items():
                side.counts.setdefault(name, Counter()).update(counts)
        return {"rows": current.rows, "baseline_rows": baseline.rows,
                "signals": {s.name: self._signal_report(s, current, baseline) for s in self.signals}}

    def _signal_report(self, signal: BusinessSignal, current: _Bucket, baseline: _Bucket) -> dict[str, Any]:
        now, before = current.counts.get(signal.name, Counter()), baseline.counts.get(signal.name, Counter())
        n_now, n_before = sum(now.values()), sum(before.values())
        if signal.above is not None:
            tested: Iterable[str] = (ABOVE,)
        elif signal.values is not None:
            tested = signal.values
        else:
            tested = sorted(set(now) | set(before))
        rule = self.rule
        enough = n_now >= rule.min_count and n_before >= rule.min_count
        tests, shifted = {}, []
        for value in tested:
            z = two_proportion_z(now[value], n_now, before[value], n_before)
            change = (now[value] / n_now if n_now else 0.0) - (before[value] / n_before if n_before else 0.0)
            tests[value] = {"z": round(z, 3), "change": round(change, 4)}
            if enough and abs(z) >= rule.z and abs(change) >= rule.min_change:
                shifted.append(value)
        return {
            "output": signal.output, "kind": signal.kind,
            "counts": dict(sorted(now.items())),
            "rates": {value: count / n_now for value, count in sorted(now.items())} if n_now else {},
            "baseline_rates": {value: count / n_before for value, count in sorted(before.items())} if n_before else {},
            "tests": tests,
            "status": ("shift" if shifted else "ok") if enough else "collecting",
            "shifted": shifted,
        }


class BusinessCollector(Collector):
    """Business gauges read when scraped, from the monitors that ``read`` returns by pipeline name::

        workbench_business_rows{pipeline,variant,window}                rows in the current window / baseline
        workbench_business_count{pipeline,variant,signal,value}        rows of each value, current window
        workbench_business_rate{pipeline,variant,signal,value,window}  share of each value, current / baseline
        workbench_business_shift{pipeline,variant,signal}              1 when a tested share shifted, else 0
    """

    def __init__(self, read: Callable[[], Mapping[str, BusinessMonitor]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        where = ["pipeline", "variant"]
        rows = GaugeMetricFamily("workbench_business_rows", "Rows answered in the current window or the baseline.",
                                 labels=[*where, "window"])
        count = GaugeMetricFamily("workbench_business_count", "Rows of each value of a business signal in the "
                                  "current window.", labels=[*where, "signal", "value"])
        rate = GaugeMetricFamily("workbench_business_rate", "Share of each value of a business signal, in the "
                                 "current window or the baseline.", labels=[*where, "signal", "value", "window"])
        shift = GaugeMetricFamily("workbench_business_shift", "1 when a business signal's share shifted from the "
                                  "baseline (two-proportion z-test), else 0.", labels=[*where, "signal"])
        for name, monitor in self._read().items():
            for variant, report in monitor.report()["variants"].items():
                rows.add_metric([name, variant, "current"], float(report["rows"]))
                rows.add_metric([name, variant, "baseline"], float(report["baseline_rows"]))
                for signal, entry in report["signals"].items():
                    for value, n in entry["counts"].items():
                        count.add_metric([name, variant, signal, value], float(n))
                    for window, shares in (("current", entry["rates"]), ("baseline", entry["baseline_rates"])):
                        for value, share in shares.items():
                            rate.add_metric([name, variant, signal, value, window], share)
                    shift.add_metric([name, variant, signal], 1.0 if entry["shifted"] else 0.0)
        yield from (rows, count, rate, shift)
