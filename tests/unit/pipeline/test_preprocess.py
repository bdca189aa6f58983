from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

from workbench.errors import PipelineWiringError
from workbench.pipeline.preprocess import Clip, Impute, MinMaxScale, OneHot, Ordinal, Standardize
from workbench.pipeline.stage import StageKind
from workbench.tensor import TensorSpec


@pytest.fixture
def reference() -> np.ndarray:
    """Reference rows with columns on very different scales and about 15% NaN."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)) * [1.0, 10.0, 0.1, 5.0] + [0.0, 100.0, -3.0, 2.0]
    x[rng.random(x.shape) < 0.15] = np.nan
    return x


@pytest.fixture
def batch() -> np.ndarray:
    """A float32 request batch on the same scales, with some NaN."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 4)) * [1.0, 10.0, 0.1, 5.0] + [0.0, 100.0, -3.0, 2.0]
    x[rng.random(x.shape) < 0.25] = np.nan
    return x.astype(np.float32)


def _dense(batch: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(batch), 1.0, batch).astype(np.float32)


CATEGORIES = np.array(
    [["red", "S"], ["green", "M"], ["blue", "L"], ["red", "M"], ["green", "XL"], ["red", "S"]], dtype=object
)


# -- Impute -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["mean", "median"])
def test_impute_matches_simple_imputer(reference, batch, strategy):
    stage = Impute.fit(reference, input="x", output="y", strategy=strategy)
    imputer = SimpleImputer(strategy=strategy).fit(reference)
    assert_allclose(stage.values, imputer.statistics_, rtol=1e-6)
    (out,) = stage.run(batch)
    assert out.dtype == np.float32
    assert not np.isnan(out).any()
    assert_allclose(out, imputer.transform(batch.astype(np.float64)), rtol=1e-6)


def test_impute_constant_matches_simple_imputer(reference, batch):
    stage = Impute.fit(reference, input="x", output="y", strategy="constant", fill_value=-1.5)
    imputer = SimpleImputer(strategy="constant", fill_value=-1.5).fit(reference)
    assert_array_equal(stage.values, [-1.5] * 4)
    assert_allclose(stage.run(batch)[0], imputer.transform(batch.astype(np.float64)), rtol=1e-6)


def test_impute_leaves_present_values_alone(batch):
    stage = Impute("x", "y", values=[9.0, 8.0, 7.0, 6.0])
    (out,) = stage.run(batch)
    present = ~np.isnan(batch)
    assert_array_equal(out[present], batch[present])
    assert_array_equal(out[~present], np.broadcast_to([9.0, 8.0, 7.0, 6.0], batch.shape)[~present])


def test_impute_without_nan_returns_the_batch_unchanged():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert_array_equal(Impute("x", "y", values=[0.0, 0.0]).run(x)[0], x)


def test_impute_output_spec_clears_allow_nan():
    stage = Impute("x", "y", values=[1.0, 2.0], strategy="mean", name="fill")
    (spec,) = stage.output_specs([TensorSpec.parse("x", "float32[-1,2]", allow_nan=True)])
    assert spec == TensorSpec("y", "float32", (-1, 2), allow_nan=False)
    assert stage.kind is StageKind.PREPROCESS


# -- Clip ---------------------------------------------------------------------------------------------


def test_clip_fits_percentiles_like_numpy(reference, batch):
    stage = Clip.fit(reference, input="x", output="y", percentiles=(5, 95))
    low, high = np.nanpercentile(reference, [5, 95], axis=0)
    assert_allclose(stage.lower, low, rtol=1e-6)
    assert_allclose(stage.upper, high, rtol=1e-6)
    dense = _dense(batch) * 3  # push values past the bounds
    assert_allclose(stage.run(dense)[0], np.clip(dense, low, high), rtol=1e-6)


def test_clip_default_percentiles(reference):
    stage = Clip.fit(reference, input="x", output="y")
    low, high = np.nanpercentile(reference, [0.5, 99.5], axis=0)
    assert_allclose(stage.lower, low, rtol=1e-6)
    assert_allclose(stage.upper, high, rtol=1e-6)


def test_clip_bounds_values():
    stage = Clip("x", "y", lower=[0.0, -1.0], upper=[1.0, 1.0])
    (out,) = stage.run(np.array([[-5.0, 0.5], [0.5, 7.0]], dtype=np.float32))
    assert_array_equal(out, [[0.0, 0.5], [0.5, 1.0]])


# -- Standardize / MinMaxScale --------------------------------------------------------------------------


def test_standardize_matches_standard_scaler(reference, batch):
    stage = Standardize.fit(reference, input="x", output="y")
    scaler = StandardScaler().fit(reference)
    assert_allclose(stage.mean, scaler.mean_, rtol=1e-6)
    assert_allclose(stage.scale, scaler.scale_, rtol=1e-6)
    dense = _dense(batch)
    assert_allclose(stage.run(dense)[0], scaler.transform(dense.astype(np.float64)), rtol=1e-4, atol=1e-5)


def test_standardize_keeps_scale_one_for_constant_columns():
    reference = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    stage = Standardize.fit(reference, input="x", output="y")
    scaler = StandardScaler().fit(reference)
    assert_allclose(stage.scale, scaler.scale_)
    assert stage.scale[1] == 1.0
    x = np.array([[2.0, 7.0]], dtype=np.float32)
    assert_allclose(stage.run(x)[0], scaler.transform(x), rtol=1e-6)


def test_standardize_passes_nan_through():
    stage = Standardize("x", "y", mean=[1.0, 2.0], scale=[2.0, 4.0])
    (out,) = stage.run(np.array([[np.nan, 6.0]], dtype=np.float32))
    assert np.isnan(out[0, 0])
    assert out[0, 1] == 1.0


def test_minmax_matches_minmax_scaler(reference, batch):
    stage = MinMaxScale.fit(reference, input="x", output="y")
    scaler = MinMaxScaler().fit(reference)
    assert_allclose(stage.minimum, scaler.data_min_, rtol=1e-6)
    assert_allclose(stage.maximum, scaler.data_max_, rtol=1e-6)
    dense = _dense(batch)
    assert_allclose(stage.run(dense)[0], scaler.transform(dense.astype(np.float64)), rtol=1e-4, atol=1e-5)


def test_minmax_maps_fitted_range_to_unit_interval_and_handles_constant_columns():
    reference = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    stage = MinMaxScale.fit(reference, input="x", output="y")
    scaler = MinMaxScaler().fit(reference)
    x = np.array([[1.0, 5.0], [5.0, 6.0], [3.0, 4.0]], dtype=np.float32)
    (out,) = stage.run(x)
    assert_allclose(out, [[0.0, 0.0], [1.0, 1.0], [0.5, -1.0]])
    assert_allclose(out, scaler.transform(x))


# -- OneHot / Ordinal ------------------------------------------------------------------------------------


def test_onehot_matches_onehot_encoder_with_unseen_category():
    stage = OneHot.fit(CATEGORIES, input="cat", output="encoded")
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(CATEGORIES)
    assert stage.categories == [list(c) for c in encoder.categories_]
    batch = np.array([["blue", "XL"], ["purple", "S"], ["red", "XXL"]], dtype=object)
    (out,) = stage.run(batch)
    assert out.dtype == np.float32
    assert_array_equal(out, encoder.transform(batch))
    # the unseen colour and the unseen size each encode as an all-zero block
    assert_array_equal(out[1, :3], [0, 0, 0])
    assert_array_equal(out[2, 3:], [0, 0, 0, 0])


def test_onehot_on_small_integers_matches_onehot_encoder():
    reference = np.array([[1, 0], [3, 1], [2, 0], [1, 1]], dtype=np.int64)
    stage = OneHot.fit(reference, input="cat", output="encoded")
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(reference)
    batch = np.array([[3, 0], [4, 1]], dtype=np.int64)
    assert_array_equal(stage.run(batch)[0], encoder.transform(batch))


def test_onehot_orders_integer_categories_like_onehot_encoder():
    reference = np.array([[2], [10], [3]], dtype=np.int64)
    stage = OneHot.fit(reference, input="cat", output="encoded")
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(reference)
    assert stage.categories == [[2, 3, 10]]
    assert_array_equal(stage.run(reference)[0], encoder.transform(reference))


def test_ordinal_matches_ordinal_encoder_with_unseen_as_minus_one():
    stage = Ordinal.fit(CATEGORIES, input="cat", output="codes")
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1).fit(CATEGORIES)
    assert stage.categories == [list(c) for c in encoder.categories_]
    batch = np.array([["blue", "XL"], ["purple", "S"], ["red", "XXL"]], dtype=object)
    (out,) = stage.run(batch)
    assert out.dtype == np.float32
    assert_array_equal(out, encoder.transform(batch))
    assert out[1, 0] == -1
    assert out[2, 1] == -1


def test_categorical_output_specs():
    onehot = OneHot.fit(CATEGORIES, input="cat", output="encoded")
    ordinal = Ordinal.fit(CATEGORIES, input="cat", output="codes")
    spec = TensorSpec.parse("cat", "str[-1,2]")
    assert onehot.output_specs([spec]) == [TensorSpec("encoded", "float32", (-1, 3 + 4))]
    assert ordinal.output_specs([spec]) == [TensorSpec("codes", "float32", (-1, 2))]
    assert ordinal.output_specs([TensorSpec.parse("cat", "int64[-1,2]")]) == [TensorSpec("codes", "float32", (-1, 2))]


# -- wiring errors ------------------------------------------------------------------------------------------


def test_width_mismatch_names_stage_and_tensor():
    stage = Standardize("x", "y", mean=[0.0] * 4, scale=[1.0] * 4, name="scale")
    message = r"stage 'scale', tensor 'x': has 3 columns where this stage was fitted on 4"
    with pytest.raises(PipelineWiringError, match=message) as info:
        stage.output_specs([TensorSpec.parse("x", "float32[-1,3]")])
    assert info.value.stage == "scale"
    assert info.value.tensor == "x"


def test_variable_width_is_accepted():
    stage = MinMaxScale("x", "y", minimum=[0.0] * 4, maximum=[1.0] * 4)
    assert stage.output_specs([TensorSpec.parse("x", "float32[-1,-1]")]) == [TensorSpec("y", "float32", (-1, 4))]


def test_column_stage_keeps_allow_nan():
    stage = Clip("x", "y", lower=[0.0, 0.0], upper=[1.0, 1.0])
    (spec,) = stage.output_specs([TensorSpec.parse("x", "float32[-1,2]", allow_nan=True)])
    assert spec.allow_nan is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("str[-1,4]", "text where float is expected"),
        ("int64[-1,4]", "dtype int64 where float is expected"),
        ("float32[-1]", r"shape \[-1\] where a 2-d tensor is expected"),
    ],
)
def test_standardize_rejects_unsuitable_input(text, message):
    stage = Standardize("x", "y", mean=[0.0] * 4, scale=[1.0] * 4, name="scale")
    with pytest.raises(PipelineWiringError, match=rf"stage 'scale', tensor 'x': {message}"):
        stage.output_specs([TensorSpec.parse("x", text)])


@pytest.mark.parametrize(
    ("text", "message"),
    [("str[-1,3]", "has 3 columns where"), ("float32[-1,2]", "dtype float32 where"), ("str[-1]", "2-d tensor")],
)
def test_onehot_rejects_unsuitable_input(text, message):
    stage = OneHot.fit(CATEGORIES, input="cat", output="encoded", name="encode")
    with pytest.raises(PipelineWiringError, match=message) as info:
        stage.output_specs([TensorSpec.parse("cat", text)])
    assert info.value.stage == "encode"


# -- constructor errors -------------------------------------------------------------------------------------


def test_impute_rejects_unknown_strategy(reference):
    with pytest.raises(ValueError, match="impute strategy must be one of"):
        Impute("x", "y", values=[1.0], strategy="mode")
    with pytest.raises(ValueError, match="impute strategy must be one of"):
        Impute.fit(reference, input="x", output="y", strategy="mode")


def test_impute_rejects_nan_values():
    with pytest.raises(ValueError, match="must not be NaN"):
        Impute("x", "y", values=[1.0, float("nan")])


@pytest.mark.parametrize(
    "make",
    [
        lambda: Clip("x", "y", lower=[0.0, 2.0], upper=[1.0, 1.0]),
        lambda: Clip("x", "y", lower=[0.0, 0.0], upper=[1.0]),
        lambda: Standardize("x", "y", mean=[0.0, 0.0], scale=[1.0, 0.0]),
        lambda: Standardize("x", "y", mean=[0.0, 0.0], scale=[1.0]),
        lambda: MinMaxScale("x", "y", minimum=[0.0, 2.0], maximum=[1.0, 1.0]),
        lambda: Impute("x", "y", values=[]),
        lambda: Standardize("x", "y", mean=[[0.0]], scale=[[1.0]]),
        lambda: OneHot("x", "y", categories=[]),
        lambda: Ordinal("x", "y", categories=[["a"], []]),
    ],
    ids=["clip-lower>upper", "clip-lengths", "zero-scale", "scale-length", "minmax-max<min", "empty-values",
         "2d-values", "no-categories", "empty-category-column"],
)
def test_constructor_rejects_bad_values(make):
    with pytest.raises(ValueError):
        make()


# -- params round trip ------------------------------------------------------------------------------------


def _fitted_stages(reference: np.ndarray) -> list:
    return [
        Impute.fit(reference, input="x", output="y", strategy="median", name="fill"),
        Impute.fit(reference, input="x", output="y", strategy="constant", fill_value=2.5),
        Clip.fit(reference, input="x", output="y", percentiles=(1, 99), name="clip"),
        Standardize.fit(reference, input="x", output="y"),
        MinMaxScale.fit(reference, input="x", output="y"),
    ]


def test_column_stages_round_trip_through_to_dict(reference, batch):
    for stage in _fitted_stages(reference):
        data = json.loads(json.dumps(stage.to_dict()))  # plain data only
        clone = type(stage).from_dict(data)
        assert clone.to_dict() == stage.to_dict()
        assert (clone.name, clone.inputs, clone.outputs) == (stage.name, ("x",), ("y",))
        assert_array_equal(clone.run(batch)[0], stage.run(batch)[0])


@pytest.mark.parametrize("cls", [OneHot, Ordinal])
def test_categorical_stages_round_trip_through_to_dict(cls):
    stage = cls.fit(CATEGORIES, input="cat", output="enc", name="encode")
    data = json.loads(json.dumps(stage.to_dict()))
    assert data["type"] == cls.type_name
    clone = cls.from_dict(data)
    batch = np.array([["blue", "XL"], ["purple", "S"]], dtype=object)
    assert_array_equal(clone.run(batch)[0], stage.run(batch)[0])


def test_to_dict_layout():
    stage = Clip("raw", "clipped", lower=[0.0], upper=[1.0], name="clip")
    assert stage.to_dict() == {
        "name": "clip", "type": "clip", "inputs": ["raw"], "outputs": ["clipped"], "lower": [0.0], "upper": [1.0],
    }


@pytest.mark.parametrize(
    "stage",
    [
        Clip("x", "y", lower=[0.0, 0.0], upper=[1.0, 1.0]),
        Standardize("x", "y", mean=[0.0, 0.0], scale=[2.0, 2.0]),
        MinMaxScale("x", "y", minimum=[0.0, 0.0], maximum=[2.0, 2.0]),
        Impute("x", "y", values=[0.0, 0.0]),
    ],
    ids=["clip", "standardize", "minmax", "impute"],
)
def test_column_stage_output_dtype_matches_its_spec_for_float64_input(stage):
    (spec,) = stage.output_specs([TensorSpec.parse("x", "float64[-1,2]")])
    (out,) = stage.run(np.array([[0.5, 1.5]], dtype=np.float64))
    assert out.dtype == spec.numpy_dtype
