"""Data in the shape users have it: a pandas DataFrame in, a DataFrame out, missing values as NaN."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from workbench import InvalidInput, Workbench
from workbench.demo.tabular import load_tabular_data
from workbench.pipeline import Pipeline


@pytest.fixture(scope="module")
def wb(tabular_pipeline: Pipeline, text_pipeline: Pipeline) -> Iterator[Workbench]:
    with Workbench.inprocess() as workbench:
        workbench.deploy(tabular_pipeline, name="tabular")
        workbench.deploy(text_pipeline, name="text")
        yield workbench


def test_a_frame_in_gives_a_frame_out_with_its_index(wb: Workbench) -> None:
    data = load_tabular_data()
    rows = data.x_test[:6].copy()
    rows[1, 4] = np.nan
    frame = pd.DataFrame(rows.astype(np.float64), columns=[f"measure {i}" for i in range(30)],
                         index=pd.Index([f"patient-{i}" for i in range(6)], name="patient"))
    answer = wb.predict("tabular", frame)
    assert isinstance(answer, pd.DataFrame)
    assert list(answer.index) == list(frame.index)
    assert list(answer.columns) == ["label", "probability", "risk_bucket", "probabilities_0", "probabilities_1"]
    direct = wb.predict("tabular", {"features": rows})
    assert list(answer["label"]) == list(direct["label"])
    np.testing.assert_array_equal(answer[["probabilities_0", "probabilities_1"]].to_numpy(), direct["probabilities"])
    assert answer.attrs["request_id"] and answer.attrs["timings_ms"]["total"] > 0
    assert answer.attrs["variants"] == {"model": "gbt"}


def test_a_text_column_feeds_the_text_input(wb: Workbench) -> None:
    frame = pd.DataFrame({"text": ["The striker scored twice", "Shares fell on the news"], "other": [1, 2]})
    answer = wb.predict("text", frame)
    assert len(answer) == 2 and list(answer["topic"]) == list(wb.predict("text", {"text": frame["text"]})["topic"])


def test_a_frame_without_the_inputs_is_refused_naming_them(wb: Workbench) -> None:
    with pytest.raises(InvalidInput, match="needs input 'text'"):
        wb.predict("text", pd.DataFrame({"words": ["a"]}))
