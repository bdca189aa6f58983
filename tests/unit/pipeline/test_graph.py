"""Pipeline DAG: build-time wiring checks, ordering, shared stages, chained models, pruning."""

from __future__ import annotations

import types

import numpy as np
import pytest

from workbench import InvalidInput, PipelineWiringError, StageFailed
from workbench.models import ModelRepository
from workbench.pipeline import (
    Aggregate,
    FunctionStage,
    Impute,
    LabelMap,
    OnnxStage,
    Pipeline,
    Standardize,
    TensorSpec,
)

X = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0]], dtype=np.float32)


def _double(x: np.ndarray) -> np.ndarray:
    return x * 2


def _impute() -> Impute:
    return Impute.fit(X, input="x", output="filled", name="impute")


def _scale() -> Standardize:
    return Standardize("filled", "scaled", mean=[0.0, 0.0], scale=[1.0, 1.0], name="scale")


def test_stages_are_ordered_by_their_tensors_not_by_the_list() -> None:
    pipeline = Pipeline("p", [TensorSpec("x", "float32", (-1, 2), allow_nan=True)], [_scale(), _impute()])
    assert [s.name for s in pipeline.stages] == ["impute", "scale"]
    assert pipeline.output_names == ("scaled",)
    np.testing.assert_allclose(pipeline.predict({"x": X})["scaled"], [[1, 2], [3, 4], [5, 6]])


def test_unknown_tensor_names_the_stage_and_the_tensor() -> None:
    bad = Standardize("nope", "scaled", mean=[0.0, 0.0], scale=[1.0, 1.0], name="scale")
    with pytest.raises(PipelineWiringError, match=r"stage 'scale', tensor 'nope': produced by no input or stage") as e:
        Pipeline("p", {"x": "float32[-1,2]"}, [bad])
    assert (e.value.stage, e.value.tensor) == ("scale", "nope")


def test_dtype_mismatch_is_caught_at_build_time() -> None:
    with pytest.raises(PipelineWiringError, match=r"stage 'scale', tensor 'filled': dtype int64"):
        Pipeline("p", {"filled": "int64[-1,2]"}, [_scale()])


def test_shape_mismatch_is_caught_at_build_time() -> None:
    with pytest.raises(PipelineWiringError, match=r"tensor 'filled': has 3 columns where this stage was fitted on 2"):
        Pipeline("p", {"filled": "float32[-1,3]"}, [_scale()])


def test_nan_must_be_imputed_before_a_stage_that_cannot_take_it() -> None:
    labels = LabelMap("x", "label", labels=["a", "b"], name="labels")
    with pytest.raises(PipelineWiringError, match="impute"):
        Pipeline("p", [TensorSpec("x", "float32", (-1, 2), allow_nan=True)], [labels])


def test_two_producers_of_one_tensor_are_refused() -> None:
    with pytest.raises(PipelineWiringError, match="already produced by stage 'impute'"):
        Pipeline("p", [TensorSpec("x", "float32", (-1, 2), allow_nan=True)],
                 [_impute(), Impute("x", "filled", values=[0, 0], name="impute2")])


def test_duplicate_stage_names_and_cycles_are_refused() -> None:
    with pytest.raises(PipelineWiringError, match="two stages are named 'impute'"):
        Pipeline("p", {"x": "float32[-1,2]"}, [_impute(), Impute("filled", "other", values=[0, 0], name="impute")])
    a = FunctionStage(_double, inputs=["b"], outputs={"a": "float32[-1,2]"}, name="make_a")
    b = FunctionStage(_double, inputs=["a"], outputs={"b": "float32[-1,2]"}, name="make_b")
    with pytest.raises(PipelineWiringError, match="cycle"):
        Pipeline("p", {"x": "float32[-1,2]"}, [a, b])


def test_declared_output_must_exist() -> None:
    with pytest.raises(PipelineWiringError, match="'missing' is produced by no stage"):
        Pipeline("p", {"filled": "float32[-1,2]"}, [_scale()], outputs=["missing"])


def test_shared_stage_runs_once_per_batch() -> None:
    calls = []

    def shared(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return x + 1

    pipeline = Pipeline(
        "p", {"x": "float32[-1,2]"},
        [
            FunctionStage(shared, inputs=["x"], outputs={"base": "float32[-1,2]"}, name="shared"),
            FunctionStage(_double, inputs=["base"], outputs={"left": "float32[-1,2]"}, name="left"),
            FunctionStage(_double, inputs=["base"], outputs={"right": "float32[-1,2]"}, name="right"),
            Aggregate(["left", "right"], "both", op="sum", name="join"),
        ],
    )
    result = pipeline.predict({"x": np.ones((4, 2), dtype=np.float32)})
    assert calls == [4]
    np.testing.assert_allclose(result["both"], np.full((4, 2), 8.0))
    assert set(result.timings_ms) == {"shared", "left", "right", "join", "validate", "total"}


def test_requesting_an_intermediate_runs_only_the_stages_it_needs() -> None:
    calls = []

    def tail(x: np.ndarray) -> np.ndarray:
        calls.append(1)
        return x

    pipeline = Pipeline(
        "p", [TensorSpec("x", "float32", (-1, 2), allow_nan=True)],
        [_impute(), _scale(), FunctionStage(tail, inputs=["scaled"], outputs={"out": "float32[-1,2]"}, name="tail")],
    )
    result = pipeline.predict({"x": X}, outputs=["filled"])
    assert list(result.outputs) == ["filled"] and calls == []
    assert "scale" not in result.timings_ms
    with pytest.raises(InvalidInput, match="unknown output tensor 'nothing'"):
        pipeline.predict({"x": X}, outputs=["nothing"])


def test_request_checks_name_the_tensor() -> None:
    pipeline = Pipeline("p", [TensorSpec("x", "float32", (-1, 2), allow_nan=True),
                              TensorSpec("y", "float32", (-1, 2))],
                        [Aggregate(["filled", "y"], "sum", op="sum", name="add"), _impute()])
    ok = {"x": X, "y": np.zeros((3, 2), dtype=np.float32)}
    assert pipeline.predict(ok)["sum"].shape == (3, 2)
    with pytest.raises(InvalidInput, match="missing input tensor 'y'"):
        pipeline.predict({"x": X})
    with pytest.raises(InvalidInput, match="unknown input tensor 'z'"):
        pipeline.predict({**ok, "z": X})
    with pytest.raises(InvalidInput, match="unknown input tensor 'z'"):  # as many names as expected, one wrong
        pipeline.predict({"x": X, "z": X})
    assert pipeline.predict(types.MappingProxyType(ok))["sum"].shape == (3, 2)  # any mapping, not only a dict
    with pytest.raises(InvalidInput, match="tensor 'y': batch of 2 where the other inputs have 3"):
        pipeline.predict({"x": X, "y": np.zeros((2, 2), dtype=np.float32)})
    with pytest.raises(InvalidInput, match="tensor 'y': contains NaN"):
        pipeline.predict({"x": X, "y": X})
    with pytest.raises(InvalidInput, match="mapping"):
        pipeline.predict([X])  # type: ignore[arg-type]


def test_a_failing_stage_is_named() -> None:
    def broken(x: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError("boom")

    pipeline = Pipeline("p", {"x": "float32[-1,2]"},
                        [FunctionStage(broken, inputs=["x"], outputs={"y": "float32[-1,2]"}, name="broken")])
    with pytest.raises(StageFailed, match="stage 'broken' failed: ZeroDivisionError: boom") as e:
        pipeline.predict({"x": np.ones((1, 2), dtype=np.float32)})
    assert e.value.stage == "broken" and e.value.status_code == 500


def test_chained_models_and_models_sharing_preprocessing(repository: ModelRepository) -> None:
    """Two tabular variants share one pre-processing chain; their outputs feed an ensemble stage."""
    from workbench.demo.tabular import fit_tabular, load_tabular_data

    data = load_tabular_data()
    fitted = fit_tabular(data)
    pipeline = Pipeline(
        "ensemble", [TensorSpec("features", "float32", (-1, 30), allow_nan=True)],
        [
            fitted.impute, fitted.clip, fitted.scale,
            OnnxStage("tabular", "gbt", name="gbt", inputs={"X": "scaled"},
                      outputs={"label": "gbt_label", "probabilities": "gbt_p"}),
            OnnxStage("tabular", "logreg", name="logreg", inputs={"X": "scaled"},
                      outputs={"label": "lr_label", "probabilities": "lr_p"}),
            Aggregate(["gbt_p", "lr_p"], "p", op="mean", name="ensemble"),
            LabelMap("p", ["label", "confidence"], labels=["malignant", "benign"], name="labels"),
        ],
        outputs=["label", "p", "gbt_p", "lr_p"],
        repository=repository,
    )
    result = pipeline.predict({"features": data.x_test})
    np.testing.assert_allclose(result["p"], (result["gbt_p"] + result["lr_p"]) / 2, rtol=1e-6)
    assert (result["p"].argmax(1) == data.y_test).mean() > 0.9
    assert [s.name for s in pipeline.stages].index("standardize") < [s.name for s in pipeline.stages].index("gbt")


def test_onnx_stage_checks_the_model_signature(repository: ModelRepository) -> None:
    with pytest.raises(PipelineWiringError, match=r"stage 'model', tensor 'x': shape \[-1, 3\] where \[-1, 30\]"):
        Pipeline("p", {"x": "float32[-1,3]"}, [OnnxStage("tabular", "gbt", name="model", inputs={"X": "x"})],
                 repository=repository, load=False)
    with pytest.raises(PipelineWiringError, match="model 'tabular' has no tensor 'features'"):
        Pipeline("p", {"x": "float32[-1,30]"}, [OnnxStage("tabular", "gbt", inputs={"features": "x"})],
                 repository=repository, load=False)


def test_with_variant_switches_the_model_and_keeps_the_rest(tabular_pipeline: Pipeline) -> None:
    other = tabular_pipeline.with_variant("logreg")
    assert other.stage("model").variant == "logreg"  # type: ignore[attr-defined]
    assert tabular_pipeline.stage("model").variant == "gbt"  # type: ignore[attr-defined]
    assert other.output_names == tabular_pipeline.output_names
    with pytest.raises(PipelineWiringError, match="no inference stage of pipeline 'tabular' has a variant 'nope'"):
        tabular_pipeline.with_variant("nope")
