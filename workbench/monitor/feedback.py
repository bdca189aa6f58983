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
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import Any

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

    Examples
    --------
    >>> loop = FeedbackLoop(log)  # doctest: +SKIP
    >>> loop.add("tabular", {"3f2a...": "malignant"})  # blocking: call it off the event loop
    {'pipeline': 'tabular', 'accepted': 1, 'unknown': [], ...}
    >>> loop.quality("tabular")["variants"]["gbt"]["accuracy"]
    1.0
    """

    def __init__(self, log: PredictionLog, outputs: Mapping[str, str] | None = None) -> None:
        self.log = log
        self.outputs: dict[str, str] = dict(outputs or {})
        self._lock = threading.Lock()
        # NOTE: pipeline -> variant -> Counter[(true, predicted)]; written by worker threads, read on the loop
        self._tallies: dict[str, dict[str, Counter[tuple[str, str]]]] = {}
        self._output_used: dict[str, str] = {}
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
        """Labelled rows, accuracy and per-class precision, recall and support, per variant."""
        with self._lock:
            tallies = {variant: Counter(tally) for variant, tally in self._tallies.get(pipeline, {}).items()}
            output = self._output_used.get(pipeline) or self.outputs.get(pipeline)
        return {"pipeline": pipeline, "output": output,
                "variants": {variant: _scores(tally) for variant, tally in sorted(tallies.items())}}

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

    def _count(self, pipeline: str, variant: str | None, outputs_json: str, label: Any, sign: int) -> None:
        predicted = self._predicted(pipeline, outputs_json)
        truth = label if isinstance(label, list) else [label]
        tally = self._tallies.setdefault(pipeline, {}).setdefault(variant or "", Counter())
        for t, p in zip(truth, predicted):
            tally[(str(t), str(p))] += sign


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
