from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from workbench.errors import SpecError
from workbench.pipeline.custom import FunctionStage, stage
from workbench.pipeline.stage import StageKind
from workbench.tensor import TensorSpec


def margin(p):
    """Module-level, so importable as '<this module>:margin'."""
    return p[:, 1] - p[:, 0]


def split(p):
    return p[:, 0], p.sum(axis=1)


@stage(inputs=["p"], outputs={"margin": "float32[-1]"}, kind="postprocess")
def decorated_margin(p):
    return p[:, 1] - p[:, 0]


P = np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]], dtype=np.float32)


def test_output_specs_are_the_declared_ones():
    s = FunctionStage(split, inputs=["p"], outputs={"first": "float32[-1]", "total": "float64[-1]"}, kind="features")
    assert s.output_specs([TensorSpec.parse("p", "float32[-1,2]")]) == [
        TensorSpec("first", "float32", (-1,)),
        TensorSpec("total", "float64", (-1,)),
    ]
    assert s.outputs == ("first", "total")
    assert s.kind is StageKind.FEATURES
    assert s.name == "split"


def test_run_returns_values_cast_to_the_declared_dtypes():
    s = FunctionStage(split, inputs=["p"], outputs={"first": "float64[-1]", "total": "float32[-1]"})
    first, total = s.run(P)
    assert first.dtype == np.float64
    assert total.dtype == np.float32
    assert_array_equal(first, [0.25, 0.5, 1.0])
    assert_array_equal(total, [1.0, 1.0, 1.0])


def test_run_passes_inputs_in_order():
    s = FunctionStage(lambda a, b: a - b, inputs=["a", "b"], outputs={"d": "int64[-1]"}, name="diff")
    (out,) = s.run(np.array([5, 7]), np.array([2, 10]))
    assert_array_equal(out, [3, -3])


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda p: p[:, 0], "returned 1 values where 2 outputs are declared"),
        (lambda p: (p[:, 0], p[:, 1], p[:, 0]), "returned 3 values where 2 outputs are declared"),
        (lambda p: [p[:, 0], p[:, 1]], "returned 1 values where 2 outputs are declared"),
    ],
)
def test_wrong_number_of_returned_values_is_a_type_error(fn, message):
    s = FunctionStage(fn, inputs=["p"], outputs={"a": "float32[-1]", "b": "float32[-1]"}, name="pair")
    with pytest.raises(TypeError, match=message):
        s.run(P)


@pytest.mark.parametrize(
    ("fn", "shape"),
    [(lambda p: p[:2, 0], r"\[2\]"), (lambda p: p.sum(), r"\[\]"), (lambda p: p.T, r"\[2, 3\]")],
)
def test_wrong_batch_size_is_a_type_error_naming_the_output(fn, shape):
    s = FunctionStage(fn, inputs=["p"], outputs={"margin": "float32[-1]"}, name="m")
    with pytest.raises(TypeError, match=rf"output 'margin' has shape {shape}, not a batch of 3"):
        s.run(P)


def test_stage_decorator_builds_a_function_stage():
    @stage(inputs=["p"], outputs={"m": "float32[-1]"}, kind="postprocess", name="my_margin", resource="gpu")
    def local_margin(p):
        return p[:, 1] - p[:, 0]

    assert isinstance(local_margin, FunctionStage)
    assert (local_margin.name, local_margin.kind, local_margin.resource) == ("my_margin", StageKind.POSTPROCESS, "gpu")
    assert local_margin.inputs == ("p",)
    assert_array_equal(local_margin.run(P)[0], [0.5, 0.0, -1.0])


def test_stage_decorator_names_the_stage_after_the_function():
    assert isinstance(decorated_margin, FunctionStage)
    assert decorated_margin.name == "decorated_margin"
    assert decorated_margin.kind is StageKind.POSTPROCESS
    assert decorated_margin.output_specs([]) == [TensorSpec("margin", "float32", (-1,))]


def test_module_level_function_gets_an_import_path():
    s = FunctionStage(margin, inputs=["p"], outputs={"margin": "float32[-1]"}, kind="postprocess")
    assert s.function_path == f"{__name__}:margin"
    assert s.to_dict() == {
        "name": "margin",
        "type": "python",
        "kind": "postprocess",
        "function": f"{__name__}:margin",
        "inputs": ["p"],
        "outputs": {"margin": "float32[-1]"},
    }


def test_module_level_function_round_trips_through_to_dict():
    s = FunctionStage(margin, inputs=["p"], outputs={"margin": "float[-1]"}, kind="postprocess", name="m",
                      resource="gpu")
    data = s.to_dict()
    assert data["resource"] == "gpu"
    assert data["outputs"] == {"margin": "float32[-1]"}
    clone = FunctionStage.from_dict(data)
    assert clone.fn is margin
    assert (clone.name, clone.kind, clone.resource, clone.inputs) == ("m", StageKind.POSTPROCESS, "gpu", ("p",))
    assert clone.declared == s.declared
    assert clone.to_dict() == data
    assert_array_equal(clone.run(P)[0], s.run(P)[0])


def test_function_given_as_an_import_path():
    s = FunctionStage("numpy:negative", inputs=["x"], outputs={"y": "float32[-1]"}, name="neg")
    assert s.fn is np.negative
    assert s.to_dict()["function"] == "numpy:negative"
    assert_array_equal(s.run(np.array([1.0, -2.0]))[0], [-1.0, 2.0])


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("numpy", "must be written 'package.module:function'"),
        (":negative", "must be written 'package.module:function'"),
        ("numpy:no_such_function", "cannot import function"),
        ("no_such_module_xyz:f", "cannot import function"),
        ("math:pi", "is not callable"),
    ],
)
def test_bad_import_paths_are_spec_errors(path, message):
    with pytest.raises(SpecError, match=message):
        FunctionStage(path, inputs=["x"], outputs={"y": "float32[-1]"})


def test_lambda_cannot_be_written_to_a_file():
    s = FunctionStage(lambda p: p[:, 0], inputs=["p"], outputs={"y": "float32[-1]"}, name="first")
    assert s.function_path is None
    with pytest.raises(SpecError, match="stage 'first': its function cannot be written to a file"):
        s.to_dict()


def test_nested_function_cannot_be_written_to_a_file():
    def inner(p):
        return p[:, 0]

    s = FunctionStage(inner, inputs=["p"], outputs={"y": "float32[-1]"})
    with pytest.raises(SpecError, match="cannot be written to a file"):
        s.to_dict()


def test_decorated_module_level_function_round_trips_through_to_dict():
    data = decorated_margin.to_dict()
    assert data["function"] == f"{__name__}:decorated_margin"
    clone = FunctionStage.from_dict(data)
    assert_array_equal(clone.run(P)[0], decorated_margin.run(P)[0])


def test_constructor_errors():
    with pytest.raises(ValueError, match="'postprocessing' is not a valid StageKind"):
        FunctionStage(margin, inputs=["p"], outputs={"y": "float32[-1]"}, kind="postprocessing")
    with pytest.raises(ValueError, match="cannot read spec"):
        FunctionStage(margin, inputs=["p"], outputs={"y": "float32(-1)"})
