"""Bad requests to the demo pipelines: a clear error naming the tensor, never a crash in ONNX Runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from workbench import InvalidInput, WorkbenchError
from workbench.pipeline import Pipeline

ROW = np.zeros((2, 30), dtype=np.float32)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"feature": ROW}, "unknown input tensor 'feature'"),
        ({}, "missing input tensor 'features'"),
        ({"features": np.zeros((2, 29), dtype=np.float32)}, r"shape \[2, 29\] where \[-1, 30\] is expected"),
        ({"features": np.zeros((30,), dtype=np.float32)}, r"shape \[30\] where \[-1, 30\]"),
        ({"features": np.zeros((0, 30), dtype=np.float32)}, "empty batch"),
        ({"features": np.full((2, 30), "x")}, "dtype str cannot be used as float32"),
        ({"features": [[1.0] * 30, [1.0] * 29]}, "cannot be read as an array"),
        ({"features": np.zeros((2, 30), dtype=np.complex64)}, "dtype complex64 cannot be used as float32"),
    ],
)
def test_tabular_bad_inputs(tabular_pipeline: Pipeline, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as error:
        tabular_pipeline.predict(inputs)
    assert error.value.status_code == 400


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"text": [1, 2]}, "tensor 'text': item 0 is int where text"),
        ({"text": ["fine", None]}, "item 1 is NoneType"),
        ({"text": np.array([1.5, 2.5])}, "dtype float64 where text"),
        ({"text": []}, "empty batch"),
        ({"text": "just a string"}, "a scalar where a batch is expected"),
        ({"text": [["nested"]]}, r"shape \[1, 1\] where \[-1\]"),
        ({"text": [b"\xff\xfe"]}, "not valid UTF-8"),
        ({"texts": ["a"]}, "unknown input tensor 'texts'"),
    ],
)
def test_text_bad_inputs(text_pipeline: Pipeline, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        text_pipeline.predict(inputs)


def test_nan_is_refused_where_not_allowed(text_pipeline: Pipeline, tabular_pipeline: Pipeline) -> None:
    nan_rows = ROW.copy()
    nan_rows[0, 0] = np.nan
    assert tabular_pipeline.predict({"features": nan_rows})["label"].shape == (2,)
    strict = Pipeline("strict", {"features": "float32[-1,30]"}, [s for s in tabular_pipeline.stages],
                      outputs=["label"], repository=tabular_pipeline.repository, load=False)
    with pytest.raises(InvalidInput, match="tensor 'features': contains NaN"):
        strict.validate({"features": nan_rows})


def test_errors_leave_the_pipeline_working(tabular_pipeline: Pipeline, text_pipeline: Pipeline) -> None:
    for bad in ({"features": "nonsense"}, {"features": np.zeros((1, 31))}):
        with pytest.raises(WorkbenchError):
            tabular_pipeline.predict(bad)
    assert tabular_pipeline.predict({"features": ROW})["label"].shape == (2,)
    assert text_pipeline.predict({"text": [b"bytes are decoded", "str"]})["topic"].shape == (2,)
