from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from workbench.errors import InvalidInput
from workbench.tensor import TensorSpec

# -- parse / text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dtype", "shape"),
    [
        ("float32[-1,30]", "float32", (-1, 30)),
        ("str[-1]", "str", (-1,)),
        ("int64", "int64", None),
        ("uint8[-1, 28, 28]", "uint8", (-1, 28, 28)),
        ("bool[]", "bool", ()),
    ],
)
def test_parse_reads_dtype_and_shape(text, dtype, shape):
    spec = TensorSpec.parse("t", text)
    assert (spec.name, spec.dtype, spec.shape, spec.allow_nan) == ("t", dtype, shape, False)


@pytest.mark.parametrize("text", ["float32[-1,30]", "str[-1]", "int64", "float64[-1,-1,3]", "bool[]"])
def test_text_round_trips_through_parse(text):
    spec = TensorSpec.parse("t", text)
    assert spec.text() == text
    assert TensorSpec.parse("t", spec.text()) == spec


def test_parse_canonicalises_dtype_aliases():
    assert TensorSpec.parse("t", "float[-1,2]").text() == "float32[-1,2]"
    assert TensorSpec.parse("t", "double").dtype == "float64"
    assert TensorSpec.parse("t", "int[-1]").dtype == "int64"
    assert TensorSpec.parse("t", "string[-1]").dtype == "str"


def test_parse_keeps_allow_nan():
    assert TensorSpec.parse("t", "float32[-1,3]", allow_nan=True).allow_nan is True


@pytest.mark.parametrize("text", ["float32[-1,", "float32(-1)", "[-1]", "float32[a]", ""])
def test_parse_rejects_malformed_text(text):
    with pytest.raises(ValueError, match="cannot read spec"):
        TensorSpec.parse("t", text)


def test_parse_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="unknown dtype 'complex64'"):
        TensorSpec.parse("t", "complex64[-1]")


def test_renamed_keeps_everything_but_the_name():
    spec = TensorSpec("a", "float32", (-1, 3), allow_nan=True)
    assert spec.renamed("b") == TensorSpec("b", "float32", (-1, 3), allow_nan=True)


# -- mismatch ---------------------------------------------------------------------------------------


def _spec(text: str) -> TensorSpec:
    return TensorSpec.parse("t", text)


@pytest.mark.parametrize(
    ("want", "have"),
    [
        ("float32[-1,3]", "float32[-1,3]"),
        ("float32[-1,3]", "float32[-1,-1]"),
        ("float32[-1,-1]", "float32[-1,3]"),
        ("float32[-1,3]", "float32[8,3]"),
        ("float32", "float32[-1,3]"),
        ("float32[-1,3]", "float32"),
    ],
)
def test_mismatch_accepts_compatible_specs(want, have):
    assert _spec(want).mismatch(_spec(have)) is None


@pytest.mark.parametrize(
    ("want", "have", "message"),
    [
        ("float32[-1,3]", "float64[-1,3]", "dtype float64 where float32 is expected"),
        ("str[-1]", "float32[-1]", "dtype float32 where str is expected"),
        ("float32[-1,3]", "float32[-1]", "shape [-1] where [-1, 3] is expected"),
        ("float32[-1,3]", "float32[-1,4]", "shape [-1, 4] where [-1, 3] is expected"),
    ],
)
def test_mismatch_explains_incompatible_specs(want, have, message):
    assert _spec(want).mismatch(_spec(have)) == message


# -- validate: numbers -------------------------------------------------------------------------------


def test_validate_casts_float64_to_float32():
    x = np.array([[1.5, -2.25, 3.0]], dtype=np.float64)
    out = _spec("float32[-1,3]").validate(x)
    assert out.dtype == np.float32
    assert_array_equal(out, x.astype(np.float32))


def test_validate_reads_nested_lists():
    out = _spec("float32[-1,2]").validate([[1.0, 2.0], [3.0, 4.0]])
    assert out.dtype == np.float32
    assert_array_equal(out, [[1.0, 2.0], [3.0, 4.0]])


def test_validate_accepts_ints_for_float():
    out = _spec("float32[-1,2]").validate(np.array([[1, 2], [3, -4]], dtype=np.int64))
    assert out.dtype == np.float32
    assert_array_equal(out, [[1.0, 2.0], [3.0, -4.0]])


def test_validate_keeps_a_matching_array_as_is():
    x = np.ones((2, 3), dtype=np.float32)
    assert _spec("float32[-1,3]").validate(x) is x


@pytest.mark.parametrize("value", [np.array([["a", "b"]]), [["a", "b"]], np.array([["a", "b"]], dtype=object)])
def test_validate_rejects_text_for_float_naming_the_tensor(value):
    spec = TensorSpec.parse("features", "float32[-1,2]")
    with pytest.raises(InvalidInput, match=r"tensor 'features': dtype str cannot be used as float32") as info:
        spec.validate(value)
    assert info.value.tensor == "features"
    assert info.value.status_code == 400


def test_validate_rejects_float_for_int():
    with pytest.raises(InvalidInput, match="dtype float64 cannot be used as int64"):
        _spec("int64[-1]").validate(np.array([1.5, 2.0]))


def test_validate_rejects_wrong_ndim():
    with pytest.raises(InvalidInput, match=r"tensor 't': shape \[3\] where \[-1, 3\] is expected"):
        _spec("float32[-1,3]").validate(np.zeros(3, dtype=np.float32))


def test_validate_rejects_fixed_dimension_mismatch():
    with pytest.raises(InvalidInput, match=r"shape \[2, 4\] where \[-1, 3\] is expected"):
        _spec("float32[-1,3]").validate(np.zeros((2, 4), dtype=np.float32))


def test_validate_accepts_any_size_for_variable_dimensions():
    out = _spec("float32[-1,-1]").validate(np.zeros((5, 7), dtype=np.float32))
    assert out.shape == (5, 7)


def test_validate_without_shape_accepts_any_rank():
    assert _spec("float32").validate(np.zeros((2, 3, 4))).shape == (2, 3, 4)


def test_validate_rejects_empty_batch():
    with pytest.raises(InvalidInput, match="empty batch"):
        _spec("float32[-1,3]").validate(np.empty((0, 3), dtype=np.float32))


@pytest.mark.parametrize("text", ["float32[-1]", "float32"])
def test_validate_rejects_scalar(text):
    with pytest.raises(InvalidInput, match="a scalar where a batch is expected"):
        _spec(text).validate(1.0)


def test_validate_rejects_nan_by_default():
    with pytest.raises(InvalidInput, match="contains NaN") as info:
        TensorSpec.parse("x", "float32[-1,2]").validate(np.array([[1.0, np.nan]]))
    assert info.value.tensor == "x"


def test_validate_keeps_nan_when_allowed():
    out = TensorSpec.parse("x", "float32[-1,2]", allow_nan=True).validate(np.array([[1.0, np.nan]]))
    assert out.dtype == np.float32
    assert np.isnan(out[0, 1])
    assert out[0, 0] == 1.0


# -- validate: text ------------------------------------------------------------------------------------


def test_validate_text_accepts_list_of_str():
    out = _spec("str[-1]").validate(["a", "bc"])
    assert out.dtype == object
    assert out.tolist() == ["a", "bc"]


def test_validate_text_converts_unicode_array_to_object():
    out = _spec("str[-1]").validate(np.array(["héllo", "x"]))
    assert out.dtype == object
    assert out.tolist() == ["héllo", "x"]
    assert all(type(item) is str for item in out)


def test_validate_text_decodes_bytes():
    out = _spec("str[-1]").validate([b"caf\xc3\xa9", "plain"])
    assert out.dtype == object
    assert out.tolist() == ["café", "plain"]


def test_validate_text_decodes_a_bytes_array():
    out = _spec("str[-1,2]").validate(np.array([[b"ab", b"cd"]]))
    assert out.dtype == object
    assert out.tolist() == [["ab", "cd"]]


def test_validate_text_does_not_modify_the_callers_array():
    value = np.array([b"a", "b"], dtype=object)
    out = _spec("str[-1]").validate(value)
    assert out.tolist() == ["a", "b"]
    assert value[0] == b"a"


def test_validate_text_rejects_invalid_utf8():
    with pytest.raises(InvalidInput, match="tensor 'text': item 1 is not valid UTF-8") as info:
        TensorSpec.parse("text", "str[-1]").validate(["ok", b"\xff\xfe"])
    assert info.value.tensor == "text"


@pytest.mark.parametrize(("value", "message"), [(["a", 3], "item 1 is int"), ([None], "item 0 is NoneType")])
def test_validate_text_rejects_non_str_items(value, message):
    with pytest.raises(InvalidInput, match=f"{message} where text"):
        _spec("str[-1]").validate(value)


def test_validate_text_rejects_numeric_array():
    with pytest.raises(InvalidInput, match="dtype float32 where text"):
        _spec("str[-1]").validate(np.zeros(2, dtype=np.float32))


def test_validate_text_checks_shape():
    with pytest.raises(InvalidInput, match=r"shape \[1, 2\] where \[-1\] is expected"):
        _spec("str[-1]").validate([["a", "b"]])


def test_validate_text_rejects_empty_batch():
    with pytest.raises(InvalidInput, match="empty batch"):
        _spec("str[-1]").validate([])
