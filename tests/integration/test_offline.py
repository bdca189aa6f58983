"""Offline batch on a real LocalCluster (2 workers, 1 thread each) and in-process.

Every output row is checked against ``pipeline.predict`` run in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from workbench.api import Workbench
from workbench.backend.offline import CACHE_PLUGIN, spec_key
from workbench.cli import main
from workbench.demo.corpus import topic_sentences
from workbench.demo.tabular import TabularData, load_tabular_data
from workbench.errors import InvalidInput, WorkbenchError
from workbench.pipeline import Pipeline

FEATURES = [f"f{i}" for i in range(30)]


@pytest.fixture(scope="module")
def wb(demo_home: Path) -> Iterator[Workbench]:
    with Workbench.local(workers=2, threads_per_worker=1) as workbench:
        yield workbench


@pytest.fixture(scope="module")
def data() -> TabularData:
    return load_tabular_data()


@pytest.fixture(scope="module")
def rows(data: TabularData) -> pd.DataFrame:
    """The tabular test rows (with NaN) as a table of 30 numeric columns and an id."""
    frame = pd.DataFrame(data.x_test, columns=FEATURES)
    frame.insert(0, "id", [f"row-{i}" for i in range(len(frame))])
    return frame


@pytest.fixture(scope="module")
def parquet_dir(rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three Parquet files, so the batch reads several partitions."""
    folder = tmp_path_factory.mktemp("tabular-parquet")
    for i, part in enumerate(np.array_split(np.arange(len(rows)), 3)):
        rows.iloc[part].reset_index(drop=True).to_parquet(folder / f"rows-{i}.parquet")
    return folder


@pytest.fixture(scope="module")
def csv_path(rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tabular-csv") / "rows.csv"
    rows.to_csv(path, index=False)
    return path


def _check_tabular(out: pd.DataFrame, pipeline: Pipeline, x: np.ndarray) -> None:
    expected = pipeline.predict({"features": x})
    assert len(out) == len(x)
    np.testing.assert_array_equal(out["label"].to_numpy(dtype=object), expected["label"])
    np.testing.assert_array_equal(out["risk_bucket"].to_numpy(dtype=object), expected["risk_bucket"])
    np.testing.assert_allclose(out["probability"].to_numpy(), expected["probability"], atol=1e-6)
    np.testing.assert_allclose(out[["probabilities_0", "probabilities_1"]].to_numpy(), expected["probabilities"],
                               atol=1e-6)


def _cache_state(dask_worker: Any = None) -> dict[str, Any]:
    cache = dask_worker.plugins[CACHE_PLUGIN]
    return {"builds": cache.builds, "keys": cache.keys()}


def test_parquet_in_parquet_out(wb: Workbench, tabular_pipeline: Pipeline, data: TabularData, parquet_dir: Path,
                                tmp_path: Path) -> None:
    report = wb.batch("tabular", parquet_dir, tmp_path / "out", batch_size=16, progress=False)
    assert (report.rows, report.workers, report.backend) == (len(data.x_test), 2, "dask")
    assert report.seconds > 0 and report.rows_per_s > 0 and report.output is None
    files = sorted(p.name for p in (tmp_path / "out").glob("*.parquet"))
    assert files[0] == "part.00000.parquet" and len(files) == report.partitions
    _check_tabular(pd.read_parquet(tmp_path / "out"), tabular_pipeline, data.x_test)


def test_named_index_is_written(wb: Workbench, tabular_pipeline: Pipeline, data: TabularData, rows: pd.DataFrame,
                                tmp_path: Path) -> None:
    wb.batch("tabular", rows.set_index("id"), tmp_path / "out", progress=False)
    out = pd.read_parquet(tmp_path / "out")
    assert out.index.name == "id" and out.index.tolist() == rows["id"].tolist()
    _check_tabular(out, tabular_pipeline, data.x_test)


def test_csv_in_dask_dataframe_out(wb: Workbench, tabular_pipeline: Pipeline, data: TabularData,
                                   csv_path: Path) -> None:
    report = wb.batch("tabular", str(csv_path), progress=False)
    assert isinstance(report.output, dd.DataFrame)
    _check_tabular(report.output.compute(), tabular_pipeline, data.x_test)


def test_pipeline_built_once_per_worker_and_reused(wb: Workbench, tabular_pipeline: Pipeline,
                                                   parquet_dir: Path) -> None:
    for _ in range(2):
        wb.batch(tabular_pipeline, parquet_dir, progress=False)
    states = wb.engine.backend.client.run(_cache_state)  # type: ignore[attr-defined]
    assert any(spec_key(tabular_pipeline) in s["keys"] for s in states.values())
    for state in states.values():
        assert state["builds"] == len(state["keys"])  # nothing was built twice


def test_deployed_pipeline_runs_on_its_warm_workers(wb: Workbench, data: TabularData, rows: pd.DataFrame,
                                                    tabular_pipeline: Pipeline) -> None:
    wb.deploy("tabular", name="tabular-logreg", variant="logreg")
    try:
        report = wb.batch("tabular-logreg", rows, columns=FEATURES, progress=False)
    finally:
        wb.undeploy("tabular-logreg")
    logreg = tabular_pipeline.with_variant("logreg")
    assert isinstance(report.output, pd.DataFrame)
    _check_tabular(report.output, logreg, data.x_test)
    states = wb.engine.backend.client.run(_cache_state)  # type: ignore[attr-defined]
    assert all(spec_key(logreg) not in s["keys"] for s in states.values())


def test_text_pipeline_on_sentences(wb: Workbench, text_pipeline: Pipeline) -> None:
    sentences, _ = topic_sentences("test")
    frame = pd.DataFrame({"text": sentences, "length": [len(s) for s in sentences]},
                         index=np.arange(len(sentences))[::-1])
    report = wb.batch("text", dd.from_pandas(frame, npartitions=3, sort=False), batch_size=32, progress=False)
    out = report.output.compute()
    assert report.rows == len(sentences)
    assert out.index.tolist() == frame.index.tolist()  # the input's index and row order
    expected = text_pipeline.predict({"text": sentences})
    np.testing.assert_array_equal(out["topic"].to_numpy(dtype=object), expected["topic"])
    # NOTE: batches are padded to their own longest sentence, hence the looser tolerance.
    np.testing.assert_allclose(out[[f"probabilities_{i}" for i in range(4)]].to_numpy(), expected["probabilities"],
                               atol=1e-5)


def test_dask_array_in_arrays_out(wb: Workbench, tabular_pipeline: Pipeline, data: TabularData) -> None:
    report = wb.batch("tabular", da.from_array(data.x_test, chunks=(50, 10)), progress=False)
    expected = tabular_pipeline.predict({"features": data.x_test})
    assert set(report.output) == set(tabular_pipeline.output_names)
    np.testing.assert_array_equal(report.output["label"], expected["label"])
    np.testing.assert_allclose(report.output["probabilities"], expected["probabilities"], atol=1e-6)


def test_missing_column_is_named(wb: Workbench) -> None:
    frame = pd.DataFrame({"sentence": ["A short one."]})
    with pytest.raises(InvalidInput, match=r"needs input 'text' \(str\[-1\]\).*\['sentence'\]"):
        wb.batch("text", frame, progress=False)
    with pytest.raises(InvalidInput, match="needs 30 columns, not 2"):
        wb.batch("tabular", pd.DataFrame({"a": [1.0], "b": [2.0]}), columns=["a", "b"], progress=False)
    with pytest.raises(InvalidInput, match="stacks the numeric columns, but the data has 2"):
        wb.batch("tabular", pd.DataFrame({"a": [1.0], "b": [2.0]}), progress=False)


def test_bad_rows_fail_with_their_partition(wb: Workbench) -> None:
    frame = pd.DataFrame({"text": ["fine", None, "fine"]})
    with pytest.raises(InvalidInput, match=r"partition \d, rows \d\.\.\d: tensor 'text': item \d"):
        wb.batch("text", frame, progress=False)


def test_cli_against_the_running_cluster(wb: Workbench, tabular_pipeline: Pipeline, data: TabularData,
                                         parquet_dir: Path, tmp_path: Path) -> None:
    address = wb.describe()["scheduler"]
    args = ["batch", "tabular", str(parquet_dir / "rows-*.parquet"), str(tmp_path / "out"), "--scheduler", address,
            "--batch-size", "32", "--columns", ",".join(FEATURES)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"rows={len(data.x_test)} " in result.output and "rows_per_s=" in result.output
    _check_tabular(pd.read_parquet(tmp_path / "out"), tabular_pipeline, data.x_test)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "is not empty" in again.output


def test_cli_starts_its_own_cluster(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows.head(20).to_parquet(tmp_path / "rows.parquet")
    result = CliRunner().invoke(main, ["batch", "tabular", str(tmp_path / "rows.parquet"), str(tmp_path / "out"),
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "rows=20 " in result.output and "on 1 worker(s)" in result.output
    assert len(pd.read_parquet(tmp_path / "out")) == 20


def test_inprocess_backend(tabular_pipeline: Pipeline, data: TabularData, parquet_dir: Path, csv_path: Path,
                           tmp_path: Path) -> None:
    with Workbench.inprocess() as local:
        report = local.batch("tabular", parquet_dir, tmp_path / "out", batch_size=50, progress=False)
        assert (report.rows, report.workers, report.backend) == (len(data.x_test), 1, "inprocess")
        _check_tabular(pd.read_parquet(tmp_path / "out"), tabular_pipeline, data.x_test)
        local.deploy("tabular")
        report = local.batch("tabular", csv_path)
        _check_tabular(report.output.compute(), tabular_pipeline, data.x_test)
        arrays = local.batch("tabular", data.x_test, progress=False).output
        np.testing.assert_allclose(arrays["probabilities"],
                                   tabular_pipeline.predict({"features": data.x_test})["probabilities"], atol=1e-6)


def test_bad_arguments(wb: Workbench, parquet_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        wb.batch("tabular", parquet_dir, batch_size=0)
    with pytest.raises(WorkbenchError, match="no input file matches"):
        wb.batch("tabular", tmp_path / "nothing-*.parquet")
    with pytest.raises(InvalidInput, match="cannot tell the format"):
        wb.batch("tabular", Path(__file__))
