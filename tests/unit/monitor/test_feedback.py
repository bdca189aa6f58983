"""Live quality from posted labels: the ROC AUC of a binary classifier, as computed by hand, per variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from workbench.monitor.feedback import FeedbackLoop
from workbench.monitor.predlog import PredictionLog

#: (predicted label, its confidence, the true label) per row.
ROWS = [("malignant", 0.9, "malignant"), ("malignant", 0.7, "benign"), ("malignant", 0.6, "malignant"),
        ("benign", 0.8, "benign"), ("benign", 0.6, "malignant"), ("benign", 0.95, "benign"),
        ("benign", 0.8, "malignant")]


def _log(path: Path, rows: list[tuple[str, float, str]], variant: str = "gbt", first: int = 0) -> PredictionLog:
    log = PredictionLog(path)
    for i, (label, confidence, _) in enumerate(rows, start=first):
        log.record(f"id-{i}", "tabular", {"model": variant}, {"features": np.zeros((1, 3), np.float32)},
                   {"label": np.array([label], dtype=object), "probability": np.array([confidence], np.float32),
                    "risk_bucket": np.array(["high"], dtype=object)}, 1.0)
    return log


def test_the_auc_is_the_share_of_positive_negative_pairs_ranked_right(tmp_path: Path) -> None:
    log = _log(tmp_path / "p.sqlite", ROWS)
    loop = FeedbackLoop(log)
    loop.add("tabular", {f"id-{i}": truth for i, (_, _, truth) in enumerate(ROWS)})
    quality = loop.quality("tabular")
    # By hand: P(malignant) is the confidence where malignant was predicted, 1 - it where benign was:
    # malignant rows 0.9, 0.6, 0.4, 0.2 against benign rows 0.7, 0.2, 0.05. Pairs ranked right:
    # 0.9 beats 3; 0.6 beats 2; 0.4 beats 2; 0.2 beats 1 and ties 1 (a half): 8.5 of 4 x 3 pairs.
    assert quality["score"] == "probability"
    gbt = quality["variants"]["gbt"]
    assert gbt["auc_positive"] == "malignant"
    assert gbt["auc"] == pytest.approx(8.5 / 12)
    malignant = [c if p == "malignant" else 1 - c for p, c, _ in ROWS]
    assert gbt["auc"] == pytest.approx(roc_auc_score([t == "malignant" for _, _, t in ROWS], malignant))
    assert gbt["count"] == len(ROWS) and gbt["accuracy"] == pytest.approx(4 / 7)
    log.close()


def test_a_relabel_moves_the_auc_and_a_reopened_log_gives_it_again(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    log = _log(path, ROWS)
    loop = FeedbackLoop(log)
    loop.add("tabular", {f"id-{i}": truth for i, (_, _, truth) in enumerate(ROWS)})
    loop.add("tabular", {"id-1": "malignant"})  # NOTE: 0.7 is now a positive: malignant 0.9, 0.7, 0.6, 0.4, 0.2
    relabelled = loop.quality("tabular")
    # against benign 0.2, 0.05: 2 + 2 + 2 + 2 + 1.5 of 5 x 2 pairs
    assert relabelled["variants"]["gbt"]["auc"] == pytest.approx(9.5 / 10)
    log.close()
    reopened = PredictionLog(path)
    assert FeedbackLoop(reopened).quality("tabular") == relabelled
    reopened.close()


def test_no_auc_until_both_classes_have_labels_nor_for_more_than_two(tmp_path: Path) -> None:
    rows = [("malignant", 0.9, "malignant"), ("benign", 0.8, "benign"), ("other", 0.7, "other")]
    log = _log(tmp_path / "p.sqlite", rows)
    loop = FeedbackLoop(log)
    loop.add("tabular", {"id-0": "malignant"})
    assert loop.quality("tabular")["variants"]["gbt"]["auc"] is None  # one class labelled so far
    loop.add("tabular", {"id-1": "benign"})
    assert loop.quality("tabular")["variants"]["gbt"]["auc"] == 1.0
    loop.add("tabular", {"id-2": "other"})
    assert loop.quality("tabular")["variants"]["gbt"]["auc"] is None  # three classes: not a binary classifier
    log.close()


def test_each_variant_has_its_own_auc(tmp_path: Path) -> None:
    log = _log(tmp_path / "p.sqlite", ROWS)
    flipped = [(p, c, "benign" if t == "malignant" else "malignant") for p, c, t in ROWS]
    for i, (label, confidence, _) in enumerate(flipped, start=100):
        log.record(f"id-{i}", "tabular", {"model": "logreg"}, {"features": np.zeros((1, 3), np.float32)},
                   {"label": np.array([label], dtype=object), "probability": np.array([confidence], np.float32)}, 1.0)
    loop = FeedbackLoop(log)
    loop.add("tabular", {f"id-{i}": truth for i, (_, _, truth) in enumerate(ROWS)})
    loop.add("tabular", {f"id-{i}": truth for i, (_, _, truth) in enumerate(flipped, start=100)})
    variants = loop.quality("tabular")["variants"]
    assert variants["gbt"]["auc"] == pytest.approx(8.5 / 12)
    assert variants["logreg"]["auc"] == pytest.approx(1 - 8.5 / 12)  # the labels flipped: the ranking reversed
    log.close()
