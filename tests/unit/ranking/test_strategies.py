"""The three ranking strategies: their math, their shapes, and masks that keep each request to its own list."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import PipelineWiringError
from workbench.pipeline import Pipeline
from workbench.ranking import STRATEGIES, ListWise, PairWise, PointWise, Rank, candidate_mask, top_k
from workbench.ranking.base import similarities


def unit(*vectors: list[float]) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def lists(seed: int = 0, rows: int = 3, length: int = 6, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(rows, dim)).astype(np.float32)
    candidates = rng.normal(size=(rows, length, dim)).astype(np.float32)
    query /= np.linalg.norm(query, axis=-1, keepdims=True)
    candidates /= np.linalg.norm(candidates, axis=-1, keepdims=True)
    return query, candidates


# -- shared bits ---------------------------------------------------------------------------------------
def test_the_mask_comes_from_text_a_bool_mask_or_non_zero_embeddings() -> None:
    text = np.array([["a", "b", ""], ["c", "", ""]], dtype=object)
    assert candidate_mask(np.zeros((2, 3, 4)), text).tolist() == [[True, True, False], [True, False, False]]
    embeddings = np.zeros((1, 3, 2), dtype=np.float32)
    embeddings[0, 1] = 1.0
    assert candidate_mask(embeddings).tolist() == [[False, True, False]]
    assert candidate_mask(embeddings, np.array([[True, False, True]])).tolist() == [[True, False, True]]


def test_top_k_pads_past_a_short_list_with_minus_one_and_zero() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]], dtype=np.float32)
    mask = np.array([[True, True, True], [True, False, False]])
    ranked, ranked_scores = top_k(scores, mask, k=4)
    assert ranked.tolist() == [[1, 2, 0, -1], [0, -1, -1, -1]]
    np.testing.assert_allclose(ranked_scores, [[0.9, 0.5, 0.1, 0.0], [0.7, 0.0, 0.0, 0.0]], rtol=1e-6)
    assert (ranked.dtype, ranked_scores.dtype) == (np.int64, np.float32)


# -- point-wise ----------------------------------------------------------------------------------------
def test_pointwise_scores_each_pair_by_its_similarity() -> None:
    query, candidates = lists()
    mask = np.ones(candidates.shape[:2], dtype=bool)
    scores, order, counts = PointWise().rank(query, candidates, mask, k=3)
    np.testing.assert_allclose(scores, np.einsum("rd,rld->rl", query, candidates), rtol=1e-5)
    assert order is None
    assert counts == {"candidates": 18, "pairs": 0}


def test_pointwise_scores_of_a_request_do_not_depend_on_its_batch_mates() -> None:
    query, candidates = lists(rows=4)
    mask = np.ones(candidates.shape[:2], dtype=bool)
    mask[1, 3:] = False
    together = PointWise().rank(query, candidates, mask, k=6)[0]
    for row in range(4):
        alone = PointWise().rank(query[row:row + 1], candidates[row:row + 1], mask[row:row + 1], k=6)[0]
        np.testing.assert_allclose(together[row][mask[row]], alone[0][mask[row]], rtol=1e-6)


# -- pair-wise -----------------------------------------------------------------------------------------
def test_pairwise_preferences_are_complementary_and_skip_padding_and_self() -> None:
    query, candidates = lists(rows=2, length=5)
    mask = np.ones((2, 5), dtype=bool)
    mask[1, 3:] = False
    preference = PairWise(temperature=5.0).preferences(query, candidates, mask)
    real = mask[:, :, None] & mask[:, None, :] & ~np.eye(5, dtype=bool)
    np.testing.assert_allclose((preference + preference.transpose(0, 2, 1))[real], 1.0, rtol=1e-5)
    assert (preference[~real] == 0).all()


def test_pairwise_borda_and_wins_aggregate_the_preferences() -> None:
    query = unit([1.0, 0.0])
    candidates = unit([0.0, 1.0], [1.0, 0.1], [0.6, 0.8])[None]
    mask = np.ones((1, 3), dtype=bool)
    wins, _, counts = PairWise(aggregate="wins").rank(query, candidates, mask, k=3)
    assert wins.tolist() == [[0.0, 1.0, 0.5]]
    assert counts == {"candidates": 3, "pairs": 6}
    borda = PairWise(temperature=2.0).rank(query, candidates, mask, k=3)[0]
    s = similarities(query, candidates)[0]
    expected = [np.mean([1 / (1 + np.exp(-2.0 * (s[i] - s[j]))) for j in range(3) if j != i]) for i in range(3)]
    np.testing.assert_allclose(borda[0], expected, rtol=1e-5)


def test_a_list_of_one_scores_one_pairwise() -> None:
    query, candidates = lists(rows=1, length=3)
    mask = np.array([[True, False, False]])
    scores = PairWise().rank(query, candidates, mask, k=1)[0]
    assert scores[0, 0] == 1.0


def test_pairwise_costs_grow_with_the_square_of_the_list_length() -> None:
    pairs = []
    for length in (2, 4, 8):
        query, candidates = lists(rows=1, length=length)
        pairs.append(PairWise().rank(query, candidates, np.ones((1, length), dtype=bool), k=1)[2]["pairs"])
    assert pairs == [2, 12, 56]


# -- list-wise -----------------------------------------------------------------------------------------
def test_listwise_scores_are_a_distribution_over_each_own_list() -> None:
    query, candidates = lists(rows=2, length=5)
    mask = np.ones((2, 5), dtype=bool)
    mask[0, 2:] = False
    scores = ListWise(temperature=3.0).rank(query, candidates, mask, k=5)[0]
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert (scores[0, 2:] == 0).all()
    s = similarities(query, candidates)[1]
    np.testing.assert_allclose(scores[1], np.exp(3 * s) / np.exp(3 * s).sum(), rtol=1e-5)


def test_listwise_diversity_moves_a_near_duplicate_down() -> None:
    query = unit([1.0, 0.0, 0.0])
    # NOTE: 0 and 1 are near duplicates, both close to the query; 2 is less relevant but different.
    candidates = unit([1.0, 0.3, 0.0], [1.0, 0.31, 0.0], [1.0, 0.0, 0.9])[None]
    mask = np.ones((1, 3), dtype=bool)
    plain = Rank(["q", "c"], strategy="listwise", top_k=3).run(query, candidates)[0]
    diverse = Rank(["q", "c"], strategy="listwise", top_k=3, diversity=0.5).run(query, candidates)[0]
    assert plain.tolist() == [[0, 1, 2]]
    assert diverse.tolist() == [[0, 2, 1]]
    assert ListWise(diversity=0.5).rank(query, candidates, mask, k=3)[2]["pairs"] == 9


def test_listwise_diversity_never_repeats_a_candidate_of_a_short_list() -> None:
    query, candidates = lists(rows=2, length=6)
    mask = np.ones((2, 6), dtype=bool)
    mask[0, 2:] = False
    ranked = Rank(["q", "c", "m"], strategy="listwise", top_k=5, diversity=0.4).run(query, candidates, mask)[0]
    assert ranked[0].tolist()[2:] == [-1, -1, -1]
    assert sorted(ranked[0, :2].tolist()) == [0, 1]
    assert len(set(ranked[1].tolist())) == 5 and (ranked[1] >= 0).all()


# -- the stage -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_gives_the_same_top_1_and_the_documented_shapes(strategy: str) -> None:
    query, candidates = lists(rows=4, length=7)
    text = np.array([[f"c{i}" for i in range(7)]] * 4, dtype=object)
    text[2, 4:] = ""
    best = np.argmax(np.where(text != "", similarities(query, candidates), -np.inf), axis=1)
    stage = Rank(["q", "c", "t"], strategy=strategy, top_k=5)
    (ranked, scores), counts = stage.run_counted(query, candidates, text)
    assert ranked.shape == scores.shape == (4, 5)
    assert (ranked[:, 0] == best).all()
    assert (ranked[2] < 4).all() and ranked[2, 4] == -1  # row 2 has four candidates: only its own come back
    assert counts["requests"] == 4 and counts["candidates"] == 25


def test_the_strategy_is_a_setting_of_the_pipeline_file() -> None:
    stage = Rank(["query", "candidates"], strategy="pairwise", top_k=3, aggregate="wins", name="rank")
    pipeline = Pipeline("r", {"query": "float32[-1,8]", "candidates": "float32[-1,-1,8]"}, [stage])
    data = pipeline.to_dict()
    assert data["stages"][0] == {"name": "rank", "type": "rank", "inputs": ["query", "candidates"],
                                 "outputs": ["ranking", "scores"], "strategy": "pairwise", "top_k": 3,
                                 "temperature": 20.0, "aggregate": "wins"}
    assert pipeline.specs["ranking"].text() == "int64[-1,3]" and pipeline.specs["scores"].text() == "float32[-1,3]"
    data["stages"][0].update(strategy="listwise", diversity=0.2)
    del data["stages"][0]["aggregate"]
    listwise = Pipeline.from_dict(data).stage("rank")
    assert isinstance(listwise, Rank) and isinstance(listwise.strategy, ListWise)
    assert listwise.strategy.diversity == 0.2


def test_bad_settings_and_wiring_are_refused() -> None:
    with pytest.raises(ValueError, match="strategy must be one of"):
        Rank(["q", "c"], strategy="random")
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        Rank(["q", "c"], top_k=0)
    with pytest.raises(ValueError, match=r"strategy 'pointwise' has no setting 'diversity'; its settings: \[\]"):
        Rank(["q", "c"], diversity=0.3)
    with pytest.raises(ValueError, match=r"diversity must be in \[0, 1\)"):
        Rank(["q", "c"], strategy="listwise", diversity=1.0)
    with pytest.raises(PipelineWiringError, match="8 dimensions where the query has 4"):
        Pipeline("r", {"q": "float32[-1,4]", "c": "float32[-1,-1,8]"}, [Rank(["q", "c"])])
