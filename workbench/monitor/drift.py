"""Drift of a deployment's inputs and predictions away from reference data.

A :class:`DriftMonitor` holds, per deployment:

* a **reference**: histograms built once from reference rows (the training
  data, or any dataset given at deploy time) and the predictions made on them;
* a **live window**: the most recent rows served (at most ``window_rows``, and
  optionally no older than ``window_s``), kept as the request arrays
  themselves in a bounded deque, so recording costs an append on the request path.

Scores are computed only when read (``wb.stats(name)["drift"]``, a scrape of
``/metrics``), per feature:

* numeric features (each column of a 2-D numeric tensor, a 1-D numeric
  tensor with many values, the length in characters of a text input): the
  population stability index (PSI) over bins at the reference's quantiles, and
  a two-sample Kolmogorov-Smirnov test (statistic and asymptotic p-value);
* categorical features (strings or integers with few distinct values): PSI
  over the categories' frequencies, unseen categories in one ``<other>`` bin.

PSI reads as: below ``warn`` (0.1) no real change, between ``warn`` and
``alert`` (0.25) a moderate shift, above ``alert`` a significant one.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> monitor = DriftMonitor({"x": rng.normal(size=(2000, 2))}, {"label": rng.choice(["a", "b"], 2000)})
>>> shifted = rng.normal(size=(500, 2)) + [0.0, 1.5]
>>> monitor.record({"x": shifted}, {"label": rng.choice(["a", "b"], 500)})
>>> report = monitor.report()
>>> report["level"], report["alerts"]
('alert', ['x[1]'])
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["DriftCollector", "DriftMonitor", "DriftThresholds", "ks_2samp", "psi"]

#: Levels in increasing severity; the alert gauge exposes their index.
LEVELS = ("ok", "warn", "alert")
#: Fractions are floored at this before PSI's logarithm, so an empty bin counts as rare, not impossible.
PSI_EPSILON = 1e-4
_OTHER = "<other>"


def psi(reference: np.ndarray, live: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two distributions over the same bins (counts or fractions).

    ``sum((live - reference) * ln(live / reference))`` over the bins, each side
    normalised to fractions that are floored at ``epsilon``.

    Examples
    --------
    >>> round(psi(np.array([50, 50]), np.array([25, 75])), 4)
    0.2747
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(live, dtype=np.float64)
    if ref.shape != cur.shape or ref.ndim != 1:
        raise ValueError("psi needs two 1-D arrays of the same bins")
    if ref.sum() <= 0 or cur.sum() <= 0:
        return float("nan")
    ref = np.maximum(ref / ref.sum(), epsilon)
    cur = np.maximum(cur / cur.sum(), epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: the statistic and its asymptotic p-value (numpy only)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan")
    points = np.concatenate((a, b))
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    statistic = float(np.max(np.abs(cdf_a - cdf_b)))
    effective = a.size * b.size / (a.size + b.size)
    root = math.sqrt(effective)
    # NOTE: Stephens' correction of the Kolmogorov distribution's argument, as in Numerical Recipes' probks.
    lam = (root + 0.12 + 0.11 / root) * statistic
    if lam < 1e-3:
        return statistic, 1.0
    k = np.arange(1, 101)
    pvalue = float(2.0 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k**2 * lam**2)))
    return statistic, min(max(pvalue, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class DriftThresholds:
    """PSI above ``warn_psi`` warns, above ``alert_psi`` alerts."""

    warn_psi: float = 0.1
    alert_psi: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.warn_psi <= self.alert_psi:
            raise ValueError("drift thresholds must satisfy 0 < warn_psi <= alert_psi")

    def level(self, score: float) -> str:
        if not score >= self.warn_psi:  # NOTE: NaN (nothing to compare) is no drift
            return "ok"
        return "alert" if score >= self.alert_psi else "warn"


@dataclass(frozen=True, slots=True)
class _Feature:
    """One scored feature: where its values come from and the reference histogram."""

    name: str
    tensor: str
    column: int | None
    kind: str
    """``"numeric"``, ``"categorical"`` or ``"text_length"`` (a numeric summary of a text input)."""
    edges: np.ndarray | None
    categories: tuple[str, ...]
    reference_counts: np.ndarray
    reference_sample: np.ndarray | None

    def values(self, array: np.ndarray) -> np.ndarray:
        values = array[:, self.column] if self.column is not None else array
        if self.kind == "text_length":
            return np.fromiter((len(str(v)) for v in values), dtype=np.float64, count=len(values))
        if self.kind == "categorical":
            return np.asarray(values).astype(str)
        numbers: np.ndarray = np.asarray(values, dtype=np.float64)
        finite: np.ndarray = numbers[np.isfinite(numbers)]
        return finite

    def counts(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "categorical":
            index = {c: i for i, c in enumerate(self.categories)}
            counts = np.zeros(len(self.categories) + 1)
            for value, count in zip(*np.unique(values, return_counts=True)):
                counts[index.get(str(value), len(self.categories))] += count
            return counts
        assert self.edges is not None
        return np.bincount(np.searchsorted(self.edges, values, side="right"),
                           minlength=self.edges.size + 1).astype(np.float64)


def _features(tensors: Mapping[str, np.ndarray], bins: int, max_categories: int, max_columns: int) -> list[_Feature]:
    features = []
    for tensor, raw in tensors.items():
        array = np.asarray(raw)
        if array.ndim == 2 and array.dtype.kind in "biuf" and array.shape[1] <= max_columns:
            columns: Iterable[int | None] = range(array.shape[1])
        elif array.ndim == 1:
            columns = [None]
        else:
            continue  # NOTE: images, token ids and wide matrices have no cheap per-column summary here
        for column in columns:
            name = tensor if column is None else f"{tensor}[{column}]"
            values = array[:, column] if column is not None else array
            kind = "numeric"
            if values.dtype.kind in "OSUb" or (values.dtype.kind in "iu" and np.unique(values).size <= max_categories):
                distinct = np.unique(values.astype(str))
                kind = "categorical" if distinct.size <= max_categories else "text_length"
            feature = _Feature(name, tensor, column, kind, None, (), np.zeros(0), None)
            if kind == "categorical":
                categories = tuple(str(c) for c in np.unique(values.astype(str)))
                feature = _Feature(name, tensor, column, kind, None, categories, np.zeros(0), None)
            else:
                sample = feature.values(array)
                if sample.size == 0:
                    continue
                edges = np.unique(np.quantile(sample, np.linspace(0, 1, bins + 1)[1:-1]))
                feature = _Feature(name, tensor, column, kind, edges, (), np.zeros(0), np.sort(sample))
            counts = feature.counts(feature.values(array))
            features.append(_Feature(feature.name, tensor, column, kind, feature.edges, feature.categories,
                                     counts, feature.reference_sample))
    return features


class DriftMonitor:
    """A deployment's reference histograms, its live window, and drift scores read on demand.

    Parameters
    ----------
    reference
        Reference inputs by tensor name (as a request would send them; many rows).
    predictions
        The pipeline's outputs on those rows, by output name: the reference of the prediction drift.
    prediction_outputs
        The outputs whose drift is scored. By default the categorical ones (a label's mix of classes).
    window_rows
        Most recent rows the live window keeps.
    window_s
        If set, rows older than this many seconds leave the live window too.
    min_rows
        Rows the live window needs before it is scored (fewer: level ``"collecting"``).
    bins
        Quantile bins per numeric feature.
    max_categories
        A string or integer feature with at most this many distinct reference values is categorical;
        strings with more are text, summarised by their length in characters.
    thresholds
        PSI warn and alert levels.

    Examples
    --------
    >>> monitor = DriftMonitor({"x": np.arange(1000.0)}, window_rows=500)
    >>> monitor.record({"x": np.arange(1000.0, 1100.0)}, {})
    >>> monitor.report()["features"]["x"]["level"]
    'alert'
    """

    def __init__(self, reference: Mapping[str, Any], predictions: Mapping[str, Any] | None = None, *,
                 prediction_outputs: Sequence[str] | None = None, window_rows: int = 5000,
                 window_s: float | None = None, min_rows: int = 50, bins: int = 10,
                 max_categories: int = 32, max_columns: int = 256, thresholds: DriftThresholds | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if window_rows < 1:
            raise ValueError("window_rows must be an integer >= 1")
        if window_s is not None and window_s <= 0:
            raise ValueError("window_s must be > 0 (or None: no age limit)")
        if not 1 <= min_rows <= window_rows:
            raise ValueError("min_rows must be between 1 and window_rows")
        if bins < 2:
            raise ValueError("bins must be an integer >= 2")
        self.window_rows, self.window_s, self.min_rows = window_rows, window_s, min_rows
        self.thresholds = thresholds or DriftThresholds()
        self._clock = clock
        reference_arrays = {k: np.asarray(v) for k, v in reference.items()}
        prediction_arrays = {k: np.asarray(v) for k, v in (predictions or {}).items()}
        unknown = sorted(set(prediction_outputs or ()) - set(prediction_arrays))
        if unknown:
            raise ValueError(f"prediction_outputs {unknown} are not among the predictions {sorted(prediction_arrays)}")
        self.reference_rows = min((len(a) for a in reference_arrays.values()), default=0)
        self.inputs = _features(reference_arrays, bins, max_categories, max_columns)
        self.predictions = _features({k: v for k, v in prediction_arrays.items()
                                      if prediction_outputs is None or k in prediction_outputs},
                                     bins, max_categories, max_columns)
        if prediction_outputs is None:
            # NOTE: scores a model makes on its own training rows are more confident than on any new rows,
            # so their histogram flags every held-out sample; the mix of predicted classes does not.
            self.predictions = [f for f in self.predictions if f.kind == "categorical"]
        self._input_tensors = sorted({f.tensor for f in self.inputs})
        self._output_tensors = sorted({f.tensor for f in self.predictions})
        #: ``(time, rows, inputs, outputs)`` per request recorded, oldest first.
        self._live: deque[tuple[float, int, dict[str, np.ndarray], dict[str, np.ndarray]]] = deque()
        self._live_rows = 0
        self._recorded = 0
        self._cache: tuple[int, float, dict[str, Any]] | None = None

    def record(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """Add one request's rows to the live window (cheap: copies of the tracked tensors, no scoring)."""
        kept_in = {t: np.array(inputs[t], copy=True) for t in self._input_tensors if t in inputs}
        # NOTE: outputs are fresh arrays of this request that no one writes to, so they are kept as they are.
        kept_out = {t: np.asarray(outputs[t]) for t in self._output_tensors if t in outputs}
        rows = max((len(a) for a in (*kept_in.values(), *kept_out.values())), default=0)
        if rows == 0:
            return
        self._live.append((self._clock(), rows, kept_in, kept_out))
        self._live_rows += rows
        self._recorded += 1
        # NOTE: whole requests leave the window, so it may hold up to one request's rows more than window_rows.
        while self._live and self._live_rows - self._live[0][1] >= self.window_rows:
            self._live_rows -= self._live.popleft()[1]

    def _window(self) -> list[tuple[float, int, dict[str, np.ndarray], dict[str, np.ndarray]]]:
        # NOTE: copied first: a scrape from prometheus_client's thread may read while the loop records.
        live = list(self._live)
        if self.window_s is not None:
            horizon = self._clock() - self.window_s
            live = [entry for entry in live if entry[0] >= horizon]
        return live

    def report(self) -> dict[str, Any]:
        """Drift scores of the live window against the reference (computed now, cached until new rows arrive).

        ``level`` is the worst of every feature's and the prediction's: ``"ok"``, ``"warn"``, ``"alert"``,
        or ``"collecting"`` while the window holds fewer than ``min_rows`` rows.
        """
        now = self._clock()
        if self._cache is not None and self._cache[0] == self._recorded and (
                self.window_s is None or now - self._cache[1] < 1.0):
            return self._cache[2]
        live = self._window()
        rows = sum(entry[1] for entry in live)
        inputs = _score(self.inputs, [entry[2] for entry in live], self.thresholds)
        predictions = _score(self.predictions, [entry[3] for entry in live], self.thresholds)
        scored = rows >= self.min_rows
        level = _worst(f["level"] for f in (*inputs.values(), *predictions.values())) if scored else "collecting"
        ranked = sorted(inputs, key=lambda n: -_finite(inputs[n]["psi"]))
        report = {
            "level": level,
            "live_rows": rows,
            "reference_rows": self.reference_rows,
            "min_rows": self.min_rows,
            "thresholds": {"warn_psi": self.thresholds.warn_psi, "alert_psi": self.thresholds.alert_psi},
            "features": inputs,
            "worst": [{"feature": n, "psi": inputs[n]["psi"]} for n in ranked[:5]],
            "alerts": [n for n in ranked if scored and inputs[n]["level"] == "alert"],
            "warnings": [n for n in ranked if scored and inputs[n]["level"] == "warn"],
            "prediction": predictions,
            "prediction_psi": max((_finite(p["psi"]) for p in predictions.values()), default=0.0),
            "prediction_level": (_worst(p["level"] for p in predictions.values()) if scored else "collecting"),
        }
        self._cache = (self._recorded, now, report)
        return report


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _worst(levels: Iterable[str]) -> str:
    return max(levels, key=LEVELS.index, default="ok")


def _score(features: list[_Feature], chunks: list[dict[str, np.ndarray]],
           thresholds: DriftThresholds) -> dict[str, dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    for tensor in {f.tensor for f in features}:
        parts = [chunk[tensor] for chunk in chunks if tensor in chunk]
        if parts:
            arrays[tensor] = np.concatenate(parts)
    scores: dict[str, dict[str, Any]] = {}
    for feature in features:
        array = arrays.get(feature.tensor)
        values = feature.values(array) if array is not None else np.zeros(0)
        score = psi(feature.reference_counts, feature.counts(values)) if values.size else float("nan")
        entry: dict[str, Any] = {"kind": feature.kind, "psi": score, "rows": int(values.size),
                                 "level": thresholds.level(score)}
        if feature.reference_sample is not None and values.size:
            entry["ks_statistic"], entry["ks_pvalue"] = ks_2samp(feature.reference_sample, values)
        scores[feature.name] = entry
    return scores


class DriftCollector(Collector):
    """Drift gauges read when scraped, from the monitors that ``read`` returns by pipeline name::

        workbench_drift_psi{pipeline,feature,source}   PSI of each input feature (source="input")
                                                       and of each prediction output (source="prediction")
        workbench_drift_alert_level{pipeline}          0 ok, 1 warn, 2 alert (and 0 while collecting)
        workbench_drift_live_rows{pipeline}            rows in the live window
    """

    def __init__(self, read: Callable[[], Mapping[str, DriftMonitor]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        scores = GaugeMetricFamily("workbench_drift_psi", "Population stability index of the live window against "
                                   "the reference, per feature.", labels=["pipeline", "feature", "source"])
        level = GaugeMetricFamily("workbench_drift_alert_level", "Worst drift level: 0 ok, 1 warn (PSI >= warn), "
                                  "2 alert (PSI >= alert).", labels=["pipeline"])
        rows = GaugeMetricFamily("workbench_drift_live_rows", "Rows in the live window scored for drift.",
                                 labels=["pipeline"])
        for name, monitor in self._read().items():
            report = monitor.report()
            for source, features in (("input", report["features"]), ("prediction", report["prediction"])):
                for feature, entry in features.items():
                    if math.isfinite(entry["psi"]):
                        scores.add_metric([name, feature, source], entry["psi"])
            level.add_metric([name], float(LEVELS.index(report["level"])) if report["level"] in LEVELS else 0.0)
            rows.add_metric([name], float(report["live_rows"]))
        yield from (scores, level, rows)
