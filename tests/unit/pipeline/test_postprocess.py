from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from workbench.errors import PipelineWiringError
from workbench.pipeline.postprocess import ConfidenceBuckets, LabelMap, Threshold, TopK
from workbench.pipeline.stage import StageKind
from workbench.tensor import TensorSpec

SCORES = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], dtype=np.float32)


# -- LabelMap -----------------------------------------------------------------------------------------------


def test_labelmap_maps_scores_to_labels_and_confidence():
    stage = LabelMap("p", ["label", "confidence"], labels=["cat", "dog", "bird"])
    assert stage.kind is StageKind.POSTPROCESS
    assert stage.output_specs([TensorSpec.parse("p", "float32[-1,3]")]) == [
        TensorSpec("label", "str", (-1,)),
        TensorSpec("confidence", "float32", (-1,)),
    ]
    labels, confidence = stage.run(SCORES)
    assert labels.tolist() == ["dog", "cat", "bird"]
    assert confidence.dtype == np.float32
    assert_array_equal(confidence, SCORES.max(axis=1))
    assert_allclose(confidence, [0.7, 0.5, 0.6], rtol=1e-6)


def test_labelmap_with_one_output_gives_only_labels():
    stage = LabelMap("p", "label", labels=["cat", "dog", "bird"])
    assert stage.output_specs([TensorSpec.parse("p", "float32[-1,3]")]) == [TensorSpec("label", "str", (-1,))]
    results = stage.run(SCORES)
    assert len(results) == 1
    assert results[0].tolist() == ["dog", "cat", "bird"]


def test_labelmap_one_row_gives_what_the_batch_gives_without_sharing_its_lookup():
    stage = LabelMap("p", ["label", "confidence"], labels=["cat", "dog", "bird"])
    batch = stage.run(SCORES)
    for row in range(len(SCORES)):
        labels, confidence = stage.run(SCORES[row:row + 1])
        assert labels.dtype == object and labels.tolist() == [batch[0][row]]
        assert confidence.dtype == np.float32 and confidence.tolist() == [batch[1][row]]
    labels[0] = "changed by the caller"
    assert stage.run(SCORES[2:3])[0].tolist() == ["bird"]


def test_labelmap_takes_the_first_of_tied_scores():
    stage = LabelMap("p", "label", labels=["a", "b", "c"])
    assert stage.run(np.array([[0.4, 0.4, 0.2]], dtype=np.float32))[0].tolist() == ["a"]


def test_labelmap_maps_class_indices_to_labels():
    stage = LabelMap("y", "label", labels=[0, 1, 2])  # labels are stored as text
    assert stage.labels == ["0", "1", "2"]
    assert stage.output_specs([TensorSpec.parse("y", "int64[-1]")]) == [TensorSpec("label", "str", (-1,))]
    (labels,) = LabelMap("y", "label", labels=["no", "yes"]).run(np.array([1, 0, 1], dtype=np.int64))
    assert labels.dtype == object
    assert labels.tolist() == ["yes", "no", "yes"]


def test_labelmap_wrong_number_of_classes_is_a_wiring_error():
    stage = LabelMap("p", "label", labels=["a", "b", "c"], name="names")
    with pytest.raises(PipelineWiringError, match="stage 'names', tensor 'p': 4 classes but 3 labels") as info:
        stage.output_specs([TensorSpec.parse("p", "float32[-1,4]")])
    assert info.value.stage == "names"
    assert info.value.tensor == "p"


def test_labelmap_accepts_variable_number_of_classes():
    stage = LabelMap("p", "label", labels=["a", "b"])
    assert stage.output_specs([TensorSpec.parse("p", "float32[-1,-1]")]) == [TensorSpec("label", "str", (-1,))]


@pytest.mark.parametrize(
    ("outputs", "text", "message"),
    [
        ("label", "float32[-1]", "expected scores"),
        ("label", "int64[-1,3]", "expected scores"),
        (["label", "confidence"], "int64[-1]", "a confidence needs scores"),
        ("label", "str[-1]", "text where"),
    ],
)
def test_labelmap_wiring_errors(outputs, text, message):
    stage = LabelMap("p", outputs, labels=["a", "b", "c"])
    with pytest.raises(PipelineWiringError, match=message):
        stage.output_specs([TensorSpec.parse("p", text)])


def test_labelmap_constructor_errors():
    with pytest.raises(PipelineWiringError, match="at most 2 outputs"):
        LabelMap("p", ["a", "b", "c"], labels=["x"])
    with pytest.raises(ValueError, match="labels must be a non-empty list"):
        LabelMap("p", "label", labels=[])


def test_labelmap_round_trips_through_to_dict():
    stage = LabelMap("p", ["label", "confidence"], labels=["cat", "dog", "bird"], name="names")
    clone = LabelMap.from_dict(json.loads(json.dumps(stage.to_dict())))
    assert clone.outputs == ("label", "confidence")
    for ours, theirs in zip(clone.run(SCORES), stage.run(SCORES), strict=True):
        assert_array_equal(ours, theirs)


# -- TopK ---------------------------------------------------------------------------------------------------


def _argsort_topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    indices = np.argsort(-x, axis=1, kind="stable")[:, :k]
    return indices, np.take_along_axis(x, indices, axis=1)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_topk_matches_argsort(k):
    x = np.random.default_rng(3).random((6, 10)).astype(np.float32)
    indices, scores = TopK("p", k=k).run(x)
    want_indices, want_scores = _argsort_topk(x, k)
    assert indices.dtype == np.int64
    assert_array_equal(indices, want_indices)
    assert_array_equal(scores, want_scores)


def test_topk_on_signed_integers():
    x = np.array([[3, -1, 7, 0], [-5, -2, -9, -1]], dtype=np.int64)
    indices, scores = TopK("p", k=2).run(x)
    assert_array_equal(indices, [[2, 0], [3, 1]])
    assert_array_equal(scores, [[7, 3], [-1, -2]])


def test_topk_ties_simple():
    x = np.array([[0.5, 0.9, 0.5, 0.1]], dtype=np.float32)
    indices, scores = TopK("p", k=2).run(x)
    assert indices[0, 0] == 1
    assert indices[0, 1] in (0, 2)
    assert_array_equal(scores, x[:, [1, 0]])


def test_topk_orders_ties_by_index_like_stable_argsort():
    x = np.array([[1, 1, 2, 2, 2, 2, 2, 1, 1, 1, 2, 1]], dtype=np.float32)
    indices, _ = TopK("p", k=5).run(x)
    assert_array_equal(indices, [[2, 3, 4, 5, 6]])


def test_topk_on_unsigned_integers():
    x = np.array([[0, 5, 3]], dtype=np.uint8)
    indices, scores = TopK("p", k=1).run(x)
    assert_array_equal(indices, [[1]])
    assert_array_equal(scores, [[5]])


def test_topk_output_specs():
    stage = TopK("p", ["idx", "top"], k=3)
    assert stage.output_specs([TensorSpec.parse("p", "float32[-1,10]")]) == [
        TensorSpec("idx", "int64", (-1, 3)),
        TensorSpec("top", "float32", (-1, 3)),
    ]
    assert stage.output_specs([TensorSpec.parse("p", "float32[-1,3]")])[0].shape == (-1, 3)
    assert stage.output_specs([TensorSpec.parse("p", "int32[-1,-1]")])[1] == TensorSpec("top", "int32", (-1, 3))


def test_topk_k_larger_than_columns_is_a_wiring_error():
    stage = TopK("p", k=5, name="best")
    with pytest.raises(PipelineWiringError, match="stage 'best', tensor 'p': k=5 but only 4 columns"):
        stage.output_specs([TensorSpec.parse("p", "float32[-1,4]")])


@pytest.mark.parametrize("text", ["float32[-1]", "str[-1,4]"])
def test_topk_rejects_unsuitable_input(text):
    with pytest.raises(PipelineWiringError):
        TopK("p", k=1).output_specs([TensorSpec.parse("p", text)])


def test_topk_rejects_k_below_one():
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        TopK("p", k=0)


def test_topk_round_trips_through_to_dict():
    stage = TopK("p", ["i", "s"], k=2)
    assert stage.to_dict()["k"] == 2
    clone = TopK.from_dict(json.loads(json.dumps(stage.to_dict())))
    for ours, theirs in zip(clone.run(SCORES), stage.run(SCORES), strict=True):
        assert_array_equal(ours, theirs)


# -- Threshold ----------------------------------------------------------------------------------------------


def test_threshold_is_greater_or_equal():
    stage = Threshold("score", "flag", threshold=0.5)
    assert stage.output_specs([TensorSpec.parse("score", "float32[-1]")]) == [TensorSpec("flag", "bool", (-1,))]
    (out,) = stage.run(np.array([0.2, 0.5, 0.7, 0.4999], dtype=np.float32))
    assert out.dtype == np.bool_
    assert out.tolist() == [False, True, True, False]


@pytest.mark.parametrize("column", [1, -1])
def test_threshold_selects_a_column(column):
    stage = Threshold("p", "flag", threshold=0.6, column=column)
    assert stage.output_specs([TensorSpec.parse("p", "float32[-1,2]")]) == [TensorSpec("flag", "bool", (-1,))]
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]], dtype=np.float32)
    assert stage.run(p)[0].tolist() == [False, True, True]


@pytest.mark.parametrize(
    ("column", "text", "message"),
    [
        (2, "float32[-1,2]", r"column 2 is out of range for shape \[-1, 2\]"),
        (-3, "float32[-1,2]", r"column -3 is out of range"),
        (None, "float32[-1,2]", "1-d tensor"),
        (0, "float32[-1]", "2-d tensor"),
        (None, "int64[-1]", "dtype int64 where float"),
    ],
)
def test_threshold_wiring_errors(column, text, message):
    stage = Threshold("p", "flag", threshold=0.5, column=column)
    with pytest.raises(PipelineWiringError, match=message):
        stage.output_specs([TensorSpec.parse("p", text)])


def test_threshold_round_trips_through_to_dict():
    stage = Threshold("p", "flag", threshold=0.25, column=1)
    assert stage.to_dict()["column"] == 1
    clone = Threshold.from_dict(json.loads(json.dumps(stage.to_dict())))
    assert_array_equal(clone.run(SCORES)[0], stage.run(SCORES)[0])


# -- ConfidenceBuckets --------------------------------------------------------------------------------------


def test_buckets_put_a_score_on_an_edge_in_the_upper_bucket():
    stage = ConfidenceBuckets("risk", "bucket", edges=[0.2, 0.6], labels=["low", "medium", "high"])
    assert stage.output_specs([TensorSpec.parse("risk", "float32[-1]")]) == [TensorSpec("bucket", "str", (-1,))]
    scores = np.array([0.0, 0.1999, 0.2, 0.5, 0.6, 0.9, 1.0], dtype=np.float64)
    (out,) = stage.run(scores)
    assert out.tolist() == ["low", "low", "medium", "medium", "high", "high", "high"]
    labels = np.array(["low", "medium", "high"], dtype=object)
    assert out.tolist() == labels[np.searchsorted([0.2, 0.6], scores, side="right")].tolist()


def test_buckets_agree_with_threshold_on_a_float32_score_equal_to_an_edge():
    score = np.array([0.7], dtype=np.float32)
    assert Threshold("p", "flag", threshold=0.7).run(score)[0].tolist() == [True]
    stage = ConfidenceBuckets("p", "bucket", edges=[0.7], labels=["low", "high"])
    assert stage.run(score)[0].tolist() == ["high"]


def test_buckets_select_a_column():
    stage = ConfidenceBuckets("p", "bucket", edges=[0.5], labels=["no", "yes"], column=0)
    assert stage.run(SCORES)[0].tolist() == ["no", "yes", "no"]


@pytest.mark.parametrize(
    ("edges", "labels", "message"),
    [
        ([0.2, 0.6], ["low", "high"], "2 edges make 3 buckets, got 2 labels"),
        ([0.2], ["low", "mid", "high"], "1 edges make 2 buckets, got 3 labels"),
        ([0.6, 0.2], ["a", "b", "c"], "non-empty, strictly increasing"),
        ([], ["a"], "non-empty, strictly increasing"),
    ],
)
def test_buckets_constructor_errors(edges, labels, message):
    with pytest.raises(ValueError, match=message):
        ConfidenceBuckets("p", "bucket", edges=edges, labels=labels)


def test_buckets_reject_2d_scores_without_a_column():
    stage = ConfidenceBuckets("p", "bucket", edges=[0.5], labels=["no", "yes"])
    with pytest.raises(PipelineWiringError, match="1-d tensor"):
        stage.output_specs([TensorSpec.parse("p", "float32[-1,3]")])


def test_buckets_round_trip_through_to_dict():
    stage = ConfidenceBuckets("p", "bucket", edges=[0.3, 0.6], labels=["a", "b", "c"], column=2, name="conf")
    data = json.loads(json.dumps(stage.to_dict()))
    assert data["edges"] == [0.3, 0.6]
    assert data["labels"] == ["a", "b", "c"]
    clone = ConfidenceBuckets.from_dict(data)
    # column 2 is [0.2, 0.2, 0.6]; float32(0.6) is just above the 0.6 edge
    assert clone.run(SCORES)[0].tolist() == stage.run(SCORES)[0].tolist() == ["a", "a", "c"]
