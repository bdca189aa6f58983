from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.decomposition import PCA

from workbench.errors import PipelineWiringError
from workbench.pipeline.features import Aggregate, PCAProjection
from workbench.pipeline.stage import StageKind
from workbench.tensor import TensorSpec


@pytest.fixture
def reference() -> np.ndarray:
    """Correlated rows whose principal directions have clearly distinct variances."""
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(80, 5)) * [5.0, 3.0, 2.0, 1.0, 0.5]
    mixing = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    return latent @ mixing + [1.0, -2.0, 3.0, 0.0, 10.0]


def _signs(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Per-component sign that aligns our components with sklearn's."""
    return np.sign(np.sum(ours * theirs, axis=1))


# -- PCAProjection ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5])
def test_pca_matches_sklearn_up_to_component_sign(reference, k):
    stage = PCAProjection.fit(reference, input="x", output="z", n_components=k)
    pca = PCA(n_components=k, svd_solver="full").fit(reference)
    assert stage.components.shape == (k, 5)
    assert_allclose(stage.mean, pca.mean_, rtol=1e-6)
    signs = _signs(stage.components, pca.components_)
    assert np.all(np.abs(signs) == 1)
    assert_allclose(stage.components * signs[:, None], pca.components_, atol=1e-5)

    batch = reference[:10].astype(np.float32)
    (z,) = stage.run(batch)
    assert z.dtype == np.float32
    assert z.shape == (10, k)
    assert_allclose(z * signs, pca.transform(batch.astype(np.float64)), atol=1e-4)


def test_pca_with_all_components_reconstructs_the_input(reference):
    stage = PCAProjection.fit(reference, input="x", output="z", n_components=5)
    batch = reference[:6].astype(np.float32)
    (z,) = stage.run(batch)
    assert_allclose(z @ stage.components + stage.mean, batch, atol=1e-4)


def test_pca_projection_is_mean_centred_dot_components():
    stage = PCAProjection("x", "z", mean=[1.0, 2.0], components=[[1.0, 0.0], [0.6, 0.8]])
    (z,) = stage.run(np.array([[2.0, 4.0], [1.0, 2.0]], dtype=np.float32))
    assert_allclose(z, [[1.0, 0.6 + 1.6], [0.0, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("k", [0, -1, 7])
def test_pca_rejects_n_components_out_of_bounds(k):
    reference = np.random.default_rng(0).normal(size=(6, 8))
    with pytest.raises(ValueError, match="n_components must be between 1 and 6"):
        PCAProjection.fit(reference, input="x", output="z", n_components=k)


def test_pca_accepts_n_components_equal_to_the_smaller_dimension():
    reference = np.random.default_rng(0).normal(size=(6, 8))
    stage = PCAProjection.fit(reference, input="x", output="z", n_components=6)
    assert stage.components.shape == (6, 8)


def test_pca_rejects_components_that_do_not_match_the_mean():
    with pytest.raises(ValueError, match="matching the mean"):
        PCAProjection("x", "z", mean=[0.0, 0.0], components=[[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="matching the mean"):
        PCAProjection("x", "z", mean=[0.0, 0.0], components=[1.0, 0.0])


def test_pca_output_spec(reference):
    stage = PCAProjection.fit(reference, input="x", output="z", n_components=2)
    assert stage.kind is StageKind.FEATURES
    assert stage.output_specs([TensorSpec.parse("x", "float32[-1,5]")]) == [TensorSpec("z", "float32", (-1, 2))]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TensorSpec.parse("x", "float32[-1,4]"), "has 4 columns where this stage was fitted on 5"),
        (TensorSpec.parse("x", "float32[-1,5]", allow_nan=True), "may contain NaN"),
        (TensorSpec.parse("x", "int64[-1,5]"), "dtype int64 where float is expected"),
    ],
)
def test_pca_wiring_errors(reference, spec, message):
    stage = PCAProjection.fit(reference, input="x", output="z", n_components=2, name="pca")
    with pytest.raises(PipelineWiringError, match=rf"stage 'pca', tensor 'x': {message}"):
        stage.output_specs([spec])


def test_pca_round_trips_through_to_dict(reference):
    stage = PCAProjection.fit(reference, input="x", output="z", n_components=3, name="reduce")
    clone = PCAProjection.from_dict(json.loads(json.dumps(stage.to_dict())))
    batch = reference[:4].astype(np.float32)
    assert clone.name == "reduce"
    assert_array_equal(clone.run(batch)[0], stage.run(batch)[0])


# -- Aggregate ----------------------------------------------------------------------------------------------

OPS = {"mean": np.mean, "sum": np.sum, "max": np.max, "min": np.min}


@pytest.mark.parametrize("op", sorted(OPS))
def test_aggregate_combines_several_inputs_element_wise(op):
    rng = np.random.default_rng(2)
    arrays = [rng.random((4, 3)).astype(np.float32) for _ in range(3)]
    stage = Aggregate(["a", "b", "c"], "out", op=op)
    specs = [TensorSpec.parse(n, "float32[-1,3]") for n in "abc"]
    assert stage.output_specs(specs) == [TensorSpec("out", "float32", (-1, 3))]
    (out,) = stage.run(*arrays)
    assert out.dtype == np.float32
    assert_allclose(out, OPS[op](np.stack(arrays), axis=0), rtol=1e-6)


def test_aggregate_mean_of_two_probability_tensors():
    a = np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    b = np.array([[0.4, 0.6], [1.0, 0.0]], dtype=np.float32)
    assert_allclose(Aggregate(["a", "b"], "p").run(a, b)[0], [[0.3, 0.7], [0.8, 0.2]], rtol=1e-6)


@pytest.mark.parametrize("op", sorted(OPS))
def test_aggregate_reduces_one_input_along_axis_1(op):
    x = np.array([[1.0, 5.0, 3.0], [-2.0, 0.0, 4.0]], dtype=np.float32)
    stage = Aggregate(["x"], "out", op=op)
    assert stage.output_specs([TensorSpec.parse("x", "float32[-1,3]")]) == [TensorSpec("out", "float32", (-1,))]
    assert_allclose(stage.run(x)[0], OPS[op](x, axis=1), rtol=1e-6)


def test_aggregate_reduces_along_a_later_axis():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    stage = Aggregate(["x"], "out", op="max", axis=2)
    assert stage.output_specs([TensorSpec.parse("x", "float32[-1,3,4]")]) == [TensorSpec("out", "float32", (-1, 3))]
    assert_array_equal(stage.run(x)[0], x.max(axis=2))


def test_aggregate_mean_of_integers_is_float32():
    stage = Aggregate(["x"], "out", op="mean")
    assert stage.output_specs([TensorSpec.parse("x", "int64[-1,2]")]) == [TensorSpec("out", "float32", (-1,))]
    (out,) = stage.run(np.array([[1, 2], [3, 6]], dtype=np.int64))
    assert out.dtype == np.float32
    assert_array_equal(out, [1.5, 4.5])


def test_aggregate_sum_of_int64_stays_int64():
    stage = Aggregate(["a", "b"], "out", op="sum")
    specs = [TensorSpec.parse(n, "int64[-1,2]") for n in "ab"]
    assert stage.output_specs(specs) == [TensorSpec("out", "int64", (-1, 2))]
    (out,) = stage.run(np.array([[1, 2]]), np.array([[10, 20]]))
    assert out.dtype == np.int64
    assert_array_equal(out, [[11, 22]])


def test_aggregate_sum_of_int32_matches_its_declared_dtype():
    stage = Aggregate(["a", "b"], "out", op="sum")
    (spec,) = stage.output_specs([TensorSpec.parse(n, "int32[-1,2]") for n in "ab"])
    (out,) = stage.run(np.ones((2, 2), dtype=np.int32), np.ones((2, 2), dtype=np.int32))
    assert out.dtype == spec.numpy_dtype


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ("float32[-1,4]", r"shape \[-1, 4\] where \[-1, 3\] is expected"),
        ("float32[-1]", r"shape \[-1\] where \[-1, 3\] is expected"),
        ("float64[-1,3]", "dtype float64 where float32 is expected"),
    ],
)
def test_aggregate_rejects_mismatched_inputs(second, message):
    stage = Aggregate(["a", "b"], "out", name="ensemble")
    with pytest.raises(PipelineWiringError, match=rf"stage 'ensemble', tensor 'b': {message}") as info:
        stage.output_specs([TensorSpec.parse("a", "float32[-1,3]"), TensorSpec.parse("b", second)])
    assert info.value.tensor == "b"
    assert "all inputs must match 'a'" in str(info.value)


def test_aggregate_accepts_variable_dimension_against_fixed():
    stage = Aggregate(["a", "b"], "out")
    specs = [TensorSpec.parse("a", "float32[-1,3]"), TensorSpec.parse("b", "float32[-1,-1]")]
    assert stage.output_specs(specs) == [TensorSpec("out", "float32", (-1, 3))]


@pytest.mark.parametrize(
    ("text", "message"),
    [("str[-1,3]", "text where"), ("float32[-1]", r"axis 1 is out of range for shape \[-1\]")],
)
def test_aggregate_single_input_wiring_errors(text, message):
    stage = Aggregate(["x"], "out")
    with pytest.raises(PipelineWiringError, match=message):
        stage.output_specs([TensorSpec.parse("x", text)])


def test_aggregate_rejects_nan_inputs():
    stage = Aggregate(["x"], "out")
    with pytest.raises(PipelineWiringError, match="may contain NaN"):
        stage.output_specs([TensorSpec.parse("x", "float32[-1,3]", allow_nan=True)])


def test_aggregate_constructor_errors():
    with pytest.raises(ValueError, match="aggregate op must be one of"):
        Aggregate(["x"], "out", op="median")
    with pytest.raises(ValueError, match="axis must not be 0"):
        Aggregate(["x"], "out", axis=0)


@pytest.mark.parametrize(("inputs", "params"), [(["x"], {"op": "max", "axis": 1}), (["a", "b"], {"op": "sum"})])
def test_aggregate_round_trips_through_to_dict(inputs, params):
    stage = Aggregate(inputs, "out", **params)
    data = stage.to_dict()
    assert {k: data[k] for k in params} == params
    clone = Aggregate.from_dict(json.loads(json.dumps(data)))
    arrays = [np.array([[1.0, 4.0], [2.0, 3.0]], dtype=np.float32) * (i + 1) for i in range(len(inputs))]
    assert clone.inputs == tuple(inputs)
    assert_array_equal(clone.run(*arrays)[0], stage.run(*arrays)[0])
