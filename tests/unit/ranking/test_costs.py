"""RankingCosts: the ranking stage's time filed under the length of each request's own list."""

from __future__ import annotations

import numpy as np

from workbench.pipeline.graph import Prediction
from workbench.ranking import Rank, RankingCosts


def request(length: int, width: int) -> dict[str, np.ndarray]:
    row = [f"passage {i}" for i in range(length)] + [""] * (width - length)
    return {"candidates": np.array([row], dtype=object)}


def test_stage_times_are_filed_by_list_length() -> None:
    costs = RankingCosts("rank", "pairwise", candidates="candidates")
    for length, ms in ((4, 1.0), (4, 3.0), (4, 2.0), (16, 9.0)):
        # NOTE: a padded list counts its own candidates only.
        costs.observe(request(length, 16), Prediction({}, {"rank": ms, "total": 20.0}))
    costs.observe(request(4, 4), Prediction({}, {"total": 1.0}))  # no ranking time: not filed
    report = costs.report()
    assert report["strategy"] == "pairwise"
    assert list(report["by_length"]) == [4, 16]
    assert report["by_length"][4] == {"requests": 3, "p50_ms": 2.0, "mean_ms": 2.0, "per_candidate_us": 500.0}
    assert report["by_length"][16]["p50_ms"] == 9.0


def test_without_the_candidates_tensor_the_ranked_indices_give_the_length() -> None:
    costs = RankingCosts("rank", "pointwise")
    costs.observe({}, Prediction({"ranking": np.array([[2, 0, -1, -1]])}, {"rank": 1.5}))
    assert list(costs.report()["by_length"]) == [2]


def test_a_rank_stage_brings_its_observer() -> None:
    observers = Rank(["q", "c", "candidates"], strategy="listwise", name="rank").observers()
    assert list(observers) == ["ranking"]
    assert Rank(["q", "c"], name="rerank").observers()["ranking/rerank"].report()["stage"] == "rerank"
