"""Which columns feed which inputs, and which columns the outputs become (no cluster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.backend.dataset import empty_frame, plan_feeds, plan_outputs, to_arrays, to_frame
from workbench.errors import InvalidInput
from workbench.pipeline import Pipeline


def test_numeric_columns_are_stacked_in_order(tabular_pipeline: Pipeline) -> None:
    meta = pd.DataFrame({"id": ["a"], **{f"c{i}": [float(i)] for i in range(30)}})
    (feed,) = plan_feeds(tabular_pipeline, meta)
    assert feed.stacked and feed.columns == tuple(f"c{i}" for i in range(30))
    assert feed.read(meta).dtype == np.float32


def test_input_named_columns_win_over_other_numbers(tabular_pipeline: Pipeline) -> None:
    meta = pd.DataFrame({"extra": [1.0], **{f"features_{i}": [0.0] for i in range(30)}})
    (feed,) = plan_feeds(tabular_pipeline, meta)
    assert feed.columns[0] == "features_0" and "extra" not in feed.columns


def test_columns_by_list_or_mapping(text_pipeline: Pipeline) -> None:
    meta = pd.DataFrame({"body": ["some text"], "title": ["a title"]})
    assert plan_feeds(text_pipeline, meta, ["title"])[0].columns == ("title",)
    assert plan_feeds(text_pipeline, meta, {"text": "body"})[0].columns == ("body",)
    with pytest.raises(InvalidInput, match="is read from one column, not 2"):
        plan_feeds(text_pipeline, meta, ["title", "body"])
    with pytest.raises(InvalidInput, match="names input 'sentence'"):
        plan_feeds(text_pipeline, meta, {"sentence": "body"})
    with pytest.raises(InvalidInput, match="no column 'nope'"):
        plan_feeds(text_pipeline, meta, ["nope"])


def test_outputs_round_trip_through_columns(tabular_pipeline: Pipeline) -> None:
    outputs = plan_outputs(tabular_pipeline)
    assert [c for o in outputs for c in o.columns] == [
        "label", "probability", "risk_bucket", "probabilities_0", "probabilities_1"]
    arrays = {"label": np.array(["benign", "malignant"], dtype=object), "probability": np.array([0.9, 0.8], "f4"),
              "risk_bucket": np.array(["low", "high"], dtype=object), "probabilities": np.eye(2, dtype="f4")}
    frame = to_frame(arrays, outputs, pd.RangeIndex(2))
    assert frame.dtypes.equals(empty_frame(outputs, pd.RangeIndex(0)).dtypes)
    back = to_arrays(frame, outputs)
    np.testing.assert_array_equal(back["probabilities"], arrays["probabilities"])
    assert back["label"].tolist() == ["benign", "malignant"]
