"""Ground-truth labels joined to logged predictions, and the live quality they give per variant.

A label is posted for a request id some time after the answer. It is joined to
the prediction logged under that id (:class:`~workbench.monitor.predlog.PredictionLog`),
kept in the log's ``labels`` table, and counted into a confusion tally of the
variant that answered. Quality is read from the tallies (no query), so
``Engine.stats`` can report it on every refresh; the tallies are rebuilt from
the log when it is opened again.

The predicted value is, per pipeline, the output named in
:attr:`FeedbackLoop.outputs` or else the first 1-D output of strings or integers
(``label``, ``topic``). A request of ``n`` rows takes a list of ``n`` labels,
a one-row request a single label too. Labels and predictions are compared as strings.

ROC AUC. For a binary classifier that also returns a score, quality has its ROC
AUC per variant too. The score is, per pipeline, the output named in
:attr:`FeedbackLoop.scores` or else the first other 1-D output of floats in
[0, 1]: the confidence of the predicted label, as :class:`~workbench.pipeline.LabelMap`
writes it beside the label (the tabular demo's ``probability``). With two classes,
the probability of the class ranked second (``auc_positive``) is that confidence
where it was predicted and one minus it where the other was; the AUC is the
Mann-Whitney statistic over the labelled rows (ties count one half). It is
``None`` until both classes have a label, and for more than two classes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import Any

import numpy as np
import orjson

from workbench.errors import InvalidInput
from workbench.monitor.predlog import PredictionLog

__all__ = ["FeedbackLoop", "normalise_labels"]


def normalise_labels(labels: Mapping[str, Any] | Iterable[Any]) -> list[tuple[str, Any]]:
    """``{id: label}``, ``[{"id": ..., "label": ...}, ...]`` or ``[(id, label), ...]`` as ``[(id, label), ...]``."""
    if isinstance(labels, Mapping):
        pairs = list(labels.items())
    else:
        pairs = []
        for item in labels:
            if isinstance(item, Mapping):
                if "id" not in item or "label" not in item:
                    raise InvalidInput("every label needs an 'id' and a 'label'")
                pairs.append((item["id"], item["label"]))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                pairs.append((item[0], item[1]))
            else:
                raise InvalidInput("labels are {id: label}, [{'id': ..., 'label': ...}] or [(id, label)]")
    for request_id, label in pairs:
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInput(f"a request id must be a non-empty string, not {request_id!r}")
        if label is None or isinstance(label, (dict, float)):
            raise InvalidInput(f"request {request_id!r}: a label is a class (string or integer) or a list of them")
    return pairs


class FeedbackLoop:
    """Labels by request id, joined to a :class:`PredictionLog`, and live quality per pipeline and variant.

    Parameters
    ----------
    log
        Where predictions are logged and labels kept.
    outputs
        The output holding the prediction, by pipeline (default: the first 1-D string or integer output).
    scores
        The output holding the confidence of the predicted label, by pipeline, for the ROC AUC
        (default: the first other 1-D output of floats between 0 and 1; none: no AUC).

    Examples
    --------
    >>> loop = FeedbackLoop(log)  # doctest: +SKIP
    >>> loop.add("tabular", {"3f2a...": "malignant"})  # blocking: call it off the event loop
    {'pipeline': 'tabular', 'accepted': 1, 'unknown': [], ...}
    >>> loop.quality("tabular")["variants"]["gbt"]["accuracy"]
    1.0
    """

    def __init__(self, log: PredictionLog, outputs: Mapping[str, str] | None = None,
                 scores: Mapping[str, str] | None = None) -> None:
        self.log = log
        self.outputs: dict[str, str] = dict(outputs or {})
        self.scores: dict[str, str] = dict(scores or {})
        self._lock = threading.Lock()
        # NOTE: pipeline -> variant -> Counter[(true, predicted)]; written by worker threads, read on the loop
        self._tallies: dict[str, dict[str, Counter[tuple[str, str]]]] = {}
        # NOTE: the same with the score of each row, Counter[(true, predicted, score)], for the AUC
        self._scored: dict[str, dict[str, Counter[tuple[str, str, float]]]] = {}
        self._output_used: dict[str, str] = {}
        self._score_used: dict[str, str] = {}
        #: Per pipeline, bumped by each label counted, and the quality computed at that count.
        self._version: dict[str, int] = {}
        self._computed: dict[str, tuple[int, dict[str, Any]]] = {}
        for pipeline, variant, outputs_json, label_json in log.labelled():
            with suppress(InvalidInput):  # NOTE: a row that no longer fits the rules is left out, not fatal
                self._count(pipeline, variant, outputs_json, orjson.loads(label_json), +1)

    def add(self, pipeline: str, labels: Mapping[str, Any] | Iterable[Any]) -> dict[str, Any]:
        """Join ``labels`` to the logged predictions of ``pipeline``; returns what was accepted and the quality.

        Blocking (it waits for the log's writer, then reads and writes the file): run it off the event loop.
        Ids with no logged prediction are returned under ``"unknown"``.
        """
        pairs = normalise_labels(labels)
        self.log.flush()
        found = self.log.find(pipeline, [request_id for request_id, _ in pairs])
        accepted: list[tuple[str, str]] = []
        unknown: list[str] = []
        with self._lock:
            for request_id, label in pairs:
                if request_id not in found:
                    unknown.append(request_id)
                    continue
                variant, outputs_json, previous = found[request_id]
                rows = len(self._predicted(pipeline, outputs_json))
                labels_list = label if isinstance(label, list) else [label]
                if len(labels_list) != rows:
                    raise InvalidInput(f"request {request_id!r} had {rows} rows and got {len(labels_list)} labels")
                if previous is not None:
                    self._count(pipeline, variant, outputs_json, orjson.loads(previous), -1)
                self._count(pipeline, variant, outputs_json, label, +1)
                found[request_id] = (variant, outputs_json, orjson.dumps(label).decode())
                accepted.append((request_id, orjson.dumps(label).decode()))
        self.log.save_labels(pipeline, accepted)
        return {"pipeline": pipeline, "accepted": len(accepted), "unknown": unknown, "quality": self.quality(pipeline)}

    def quality(self, pipeline: str) -> dict[str, Any]:
        """Labelled rows, accuracy, per-class precision, recall and support, and the ROC AUC, per variant."""
        with self._lock:
            version = self._version.get(pipeline, 0)
            computed = self._computed.get(pipeline)
            if computed is not None and computed[0] == version:
                return computed[1]  # NOTE: read every second by the dashboard: computed once per label posted
            tallies = {variant: Counter(tally) for variant, tally in self._tallies.get(pipeline, {}).items()}
            scored = {variant: Counter(tally) for variant, tally in self._scored.get(pipeline, {}).items()}
            output = self._output_used.get(pipeline) or self.outputs.get(pipeline)
            score = self._score_used.get(pipeline) or self.scores.get(pipeline)
        variants = {}
        for variant, tally in sorted(tallies.items()):
            variants[variant] = _scores(tally)
            variants[variant].update(_auc(scored.get(variant, Counter())))
        quality = {"pipeline": pipeline, "output": output, "score": score, "variants": variants}
        with self._lock:
            if self._version.get(pipeline, 0) == version:
                self._computed[pipeline] = (version, quality)
        return quality

    def _predicted(self, pipeline: str, outputs_json: str) -> list[Any]:
        outputs: dict[str, Any] = orjson.loads(outputs_json)
        name = self.outputs.get(pipeline)
        if name is None:
            name = next((n for n, v in outputs.items() if isinstance(v, list) and v
                         and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v)), None)
        if name is None or not isinstance(outputs.get(name), list):
            raise InvalidInput(f"pipeline {pipeline!r} logged no 1-D string or integer output to compare labels "
                               f"with (outputs: {sorted(outputs)}); name one in FeedbackLoop.outputs")
        self._output_used[pipeline] = name
        predicted: list[Any] = outputs[name]
        return predicted

    def _scores_of(self, pipeline: str, outputs_json: str, predicted: str) -> list[float] | None:
        outputs: dict[str, Any] = orjson.loads(outputs_json)
        name = self.scores.get(pipeline)
        if name is None:
            name = next((n for n, v in outputs.items() if n != predicted and isinstance(v, list) and v
                         and all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in v)), None)
        values = outputs.get(name) if name is not None else None
        if name is None or not isinstance(values, list) or not all(isinstance(x, int | float) for x in values):
            return None
        self._score_used[pipeline] = name
        return [float(x) for x in values]

    def _count(self, pipeline: str, variant: str | None, outputs_json: str, label: Any, sign: int) -> None:
        predicted = self._predicted(pipeline, outputs_json)
        truth = label if isinstance(label, list) else [label]
        tally = self._tallies.setdefault(pipeline, {}).setdefault(variant or "", Counter())
        for t, p in zip(truth, predicted):
            tally[(str(t), str(p))] += sign
        scores = self._scores_of(pipeline, outputs_json, self._output_used[pipeline])
        if scores is not None:
            scored = self._scored.setdefault(pipeline, {}).setdefault(variant or "", Counter())
            for t, p, score in zip(truth, predicted, scores):
                scored[(str(t), str(p), score)] += sign
        self._version[pipeline] = self._version.get(pipeline, 0) + 1


def _scores(tally: Counter[tuple[str, str]]) -> dict[str, Any]:
    count = sum(tally.values())
    correct = sum(n for (t, p), n in tally.items() if t == p)
    classes = sorted({c for pair, n in tally.items() if n for c in pair})
    per_class = {}
    for c in classes:
        true_positive = tally[(c, c)]
        predicted = sum(n for (_, p), n in tally.items() if p == c)
        actual = sum(n for (t, _), n in tally.items() if t == c)
        per_class[c] = {"precision": true_positive / predicted if predicted else None,
                        "recall": true_positive / actual if actual else None, "support": actual}
    return {"count": count, "accuracy": correct / count if count else None, "classes": per_class}


def _auc(scored: Counter[tuple[str, str, float]]) -> dict[str, Any]:
    """ROC AUC of a binary classifier from ``(true, predicted, confidence)`` counts (see the module docstring)."""
    rows = [(t, p, score, n) for (t, p, score), n in scored.items() if n > 0]
    classes = sorted({c for t, p, _, _ in rows for c in (t, p)})
    if len(classes) != 2:
        return {"auc": None, "auc_positive": None}
    positive = classes[1]
    truth = np.array([t == positive for t, _, _, _ in rows])
    counts = np.array([n for _, _, _, n in rows], dtype=np.float64)
    # NOTE: the confidence is that of the predicted label: for the other class of two it is the complement.
    score = np.array([s if p == positive else 1.0 - s for _, p, s, _ in rows])
    positives, negatives = counts[truth].sum(), counts[~truth].sum()
    if positives == 0 or negatives == 0:
        return {"auc": None, "auc_positive": positive}
    # NOTE: Mann-Whitney over weighted rows: each positive beats the negatives scored lower, and half of the ties.
    order = np.argsort(score, kind="stable")
    score, truth, counts = score[order], truth[order], counts[order]
    unique, inverse = np.unique(score, return_inverse=True)
    negatives_at = np.bincount(inverse, weights=np.where(truth, 0.0, counts), minlength=unique.size)
    below = np.cumsum(negatives_at) - negatives_at
    wins = (counts[truth] * (below[inverse[truth]] + 0.5 * negatives_at[inverse[truth]])).sum()
    return {"auc": float(wins / (positives * negatives)), "auc_positive": positive}
