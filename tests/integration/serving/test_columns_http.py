"""Tables over HTTP: V2 inputs as columns (MLServer's ``content_type: "pd"``), null as NaN, drift references."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from servers import Served

from workbench.demo.tabular import load_tabular_data

ROWS = load_tabular_data().x_test[:3].astype(np.float64)


@pytest.fixture(scope="module")
def http(inprocess_server: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=inprocess_server.url, timeout=30) as client:
        yield client


def _columns(rows: np.ndarray) -> list[dict[str, Any]]:
    """Each feature a column of its own, as MLServer's pandas codec sends a DataFrame (FP64, with nulls)."""
    return [{"name": f"measure_{i}", "datatype": "FP64", "shape": [len(rows)],
             "data": [None if np.isnan(v) else float(v) for v in rows[:, i]]} for i in range(rows.shape[1])]


def test_columns_of_a_table_feed_the_stacked_input(http: httpx.Client) -> None:
    rows = ROWS.copy()
    rows[2, 7] = np.nan
    as_columns = http.post("/v2/models/tabular/infer",
                           json={"parameters": {"content_type": "pd"}, "inputs": _columns(rows)})
    as_tensor = http.post("/v2/models/tabular/infer", json={"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [3, 30],
         "data": [None if np.isnan(v) else float(v) for v in rows.astype(np.float32).ravel()]}]})
    assert as_columns.status_code == as_tensor.status_code == 200, (as_columns.text, as_tensor.text)
    assert as_columns.json()["outputs"] == as_tensor.json()["outputs"]


def test_a_text_column_by_the_input_s_name(http: httpx.Client) -> None:
    answer = http.post("/v2/models/text/infer", json={"parameters": {"content_type": "pd"}, "inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["The striker scored", "Stocks fell"]},
        {"name": "source", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]})
    assert answer.status_code == 200, answer.text
    assert next(o for o in answer.json()["outputs"] if o["name"] == "topic")["shape"] == [2]


@pytest.mark.parametrize(("inputs", "fragment"), [
    ([{"name": "a", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0]}],
     "tensor 'a': a column (content_type 'pd') has shape [rows] or [rows, 1], not [1, 2]"),
    ([{"name": "a", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]},
      {"name": "b", "datatype": "FP64", "shape": [1], "data": [1.0]}], "the columns (content_type 'pd') have"),
    ([{"name": "a", "datatype": "FP64", "shape": [1], "data": [1.0]}],
     "stacks the numeric columns, but the data has 1"),
])
def test_columns_that_make_no_table_are_a_400(http: httpx.Client, inputs: list[dict[str, Any]],
                                              fragment: str) -> None:
    answer = http.post("/v2/models/tabular/infer", json={"parameters": {"content_type": "pd"}, "inputs": inputs})
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["error"]


def test_put_reference_sets_the_rows_drift_is_scored_against(http: httpx.Client) -> None:
    rows = load_tabular_data().x_train[:120]
    answer = http.put("/api/pipelines/tabular/reference", json={"inputs": [
        {"name": "features", "datatype": "FP32", "shape": list(rows.shape),
         "data": [None if np.isnan(v) else float(v) for v in rows.ravel()]}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["reference_rows"] == 120 and answer.json()["live_rows"] == 0
    assert http.get("/api/pipelines/tabular/stats").json()["drift"]["reference_rows"] == 120
    as_columns = http.put("/api/pipelines/tabular/reference",
                          json={"parameters": {"content_type": "pd"}, "inputs": _columns(rows[:40])})
    assert as_columns.status_code == 200 and as_columns.json()["reference_rows"] == 40, as_columns.text
    wrong = http.put("/api/pipelines/tabular/reference", json={"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]})
    assert wrong.status_code == 400 and "'features'" in wrong.json()["error"], wrong.text
    assert http.get("/api/pipelines/tabular/stats").json()["drift"]["reference_rows"] == 40, "the last good one holds"
