"""Datasets in and out of a pipeline: tables of rows on one side, batches of tensors on the other.

The input is read as a Dask DataFrame (:func:`read_dataset`); :func:`plan_feeds`
says which columns make each input tensor and :func:`plan_outputs` which columns
each output tensor becomes. Both plans are made on the client from the
DataFrame's meta, so a missing column fails before any task runs.

* A column named like a pipeline input feeds that input (1-D inputs, such as the
  text pipeline's ``text``).
* A single 2-D input ``[-1,k]`` (the tabular ``features float32[-1,30]``) stacks
  the columns ``features_0 .. features_29`` when they are all there, otherwise
  every numeric column, in order. ``columns=`` names them instead: a list for a
  pipeline with one input, or ``{input: column(s)}``.
* A 1-D output becomes one column; a 2-D output ``[-1,k]`` becomes the columns
  ``name_0 .. name_{k-1}``.
"""

from __future__ import annotations

import glob
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd

from workbench.errors import InvalidInput, WorkbenchError
from workbench.pipeline.graph import Pipeline
from workbench.tensor import TensorSpec

__all__ = [
    "Columns", "Feed", "OutputColumns", "columns_frame", "empty_frame", "frame_inputs", "frame_outputs", "plan_feeds",
    "plan_outputs", "read_dataset", "read_reference", "to_arrays", "to_frame",
]

#: Which columns feed which inputs: a list (one-input pipelines) or ``{input: column or columns}``.
Columns = Sequence[Hashable] | Mapping[str, Hashable | Sequence[Hashable]]
#: pandas' dtype for text outputs (what Dask reads Parquet text back as).
_TEXT = pd.StringDtype("pyarrow")


# -- columns in, tensors through, columns out ------------------------------------------


@dataclass(frozen=True, slots=True)
class Feed:
    """The columns that make one input tensor: one column, or several stacked (2-D inputs)."""

    tensor: str
    columns: tuple[Hashable, ...]
    stacked: bool
    dtype: str

    def read(self, frame: pd.DataFrame) -> np.ndarray:
        dtype = np.dtype(object) if self.dtype == "str" else np.dtype(self.dtype)
        na_value = np.nan if dtype.kind == "f" else None
        try:
            selected = frame[list(self.columns)] if self.stacked else frame[self.columns[0]]
            values: np.ndarray = selected.to_numpy(dtype=dtype, na_value=na_value)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"input {self.tensor!r}: columns {list(self.columns)} cannot be read as "
                               f"{self.dtype} ({exc})", self.tensor) from exc
        return values


@dataclass(frozen=True, slots=True)
class OutputColumns:
    """One output tensor as columns: ``name`` (1-D), or ``name_0 .. name_{width-1}`` (2-D)."""

    tensor: str
    width: int | None
    dtype: str

    @property
    def columns(self) -> list[str]:
        if self.width is None:
            return [self.tensor]
        return [f"{self.tensor}_{i}" for i in range(self.width)]


def _rank(spec: TensorSpec) -> int:
    rank = 1 if spec.shape is None else len(spec.shape)
    if rank not in (1, 2):
        raise InvalidInput(f"input {spec.name!r} is {spec.text()}: only 1-D and 2-D inputs can be read from "
                           "columns", spec.name)
    return rank


def plan_feeds(pipeline: Pipeline, meta: pd.DataFrame, columns: Columns | None = None) -> tuple[Feed, ...]:
    """Which columns of ``meta`` feed each pipeline input; raises naming the missing inputs or columns."""
    specs = pipeline.input_specs
    chosen: dict[str, list[Hashable]] = {}
    if isinstance(columns, Mapping):
        unknown = [n for n in columns if n not in specs]
        if unknown:
            raise InvalidInput(f"columns= names input {unknown[0]!r}, which pipeline {pipeline.name!r} does not "
                               f"have; inputs: {list(specs)}", str(unknown[0]))
        chosen = {n: [c] if isinstance(c, str) or not isinstance(c, Sequence) else list(c)
                  for n, c in columns.items()}
    elif columns is not None:
        if len(specs) != 1:
            raise InvalidInput(f"a list of columns fits a pipeline with one input; {pipeline.name!r} has "
                               f"{list(specs)}: pass columns={{input: column(s)}}")
        chosen = {next(iter(specs)): list(columns)}
    available = list(meta.columns)
    numeric = [c for c in available
               if pd.api.types.is_numeric_dtype(meta[c]) and not pd.api.types.is_bool_dtype(meta[c])]
    feeds: list[Feed] = []
    missing: list[str] = []
    for name, spec in specs.items():
        rank = _rank(spec)
        width = spec.shape[1] if spec.shape is not None and rank == 2 and spec.shape[1] != -1 else None
        picked = chosen.get(name)
        if picked is None:
            picked = _default_columns(spec, rank, width, available, numeric, alone=len(specs) == 1)
        if picked is None:
            missing.append(name)
            continue
        absent = [c for c in picked if c not in available]
        if absent:
            raise InvalidInput(f"input {name!r}: no column {absent[0]!r} in the data; columns: {available}", name)
        if rank == 1 and len(picked) != 1:
            raise InvalidInput(f"input {name!r} ({spec.text()}) is read from one column, not {len(picked)}", name)
        if width is not None and len(picked) != width:
            raise InvalidInput(f"input {name!r} ({spec.text()}) needs {width} columns, not {len(picked)}: "
                               f"{picked}", name)
        feeds.append(Feed(name, tuple(picked), rank == 2, spec.dtype))
    if missing:
        wanted = ", ".join(f"{n!r} ({specs[n].text()})" for n in missing)
        raise InvalidInput(f"pipeline {pipeline.name!r} needs input {wanted}, and the data has no column of that "
                           f"name (columns: {available}); choose them with columns=", missing[0])
    return tuple(feeds)


def _default_columns(spec: TensorSpec, rank: int, width: int | None, available: list[Hashable],
                     numeric: list[Hashable], *, alone: bool) -> list[Hashable] | None:
    if rank == 1:
        return [spec.name] if spec.name in available else None
    if width is not None and all(f"{spec.name}_{i}" in available for i in range(width)):
        return [f"{spec.name}_{i}" for i in range(width)]
    if not alone or not numeric:
        return None
    if width is not None and len(numeric) != width:
        raise InvalidInput(f"input {spec.name!r} ({spec.text()}) stacks the numeric columns, but the data has "
                           f"{len(numeric)}: {numeric}; choose {width} with columns=", spec.name)
    return numeric


def plan_outputs(pipeline: Pipeline) -> tuple[OutputColumns, ...]:
    """The columns each output becomes; the widths must be known before running."""
    outputs = []
    for name, spec in pipeline.output_specs.items():
        shape = spec.shape if spec.shape is not None else (-1,)
        if len(shape) == 1:
            outputs.append(OutputColumns(name, None, spec.dtype))
        elif len(shape) == 2 and shape[1] != -1:
            outputs.append(OutputColumns(name, shape[1], spec.dtype))
        else:
            raise WorkbenchError(f"output {name!r} is {spec.text()}: only 1-D outputs and 2-D outputs of known "
                                 "width become columns", 400)
    return tuple(outputs)


def to_frame(arrays: Mapping[str, np.ndarray], outputs: Sequence[OutputColumns], index: pd.Index) -> pd.DataFrame:
    """The output columns of a partition (also its meta, from empty arrays)."""
    data: dict[str, Any] = {}
    for out in outputs:
        values = arrays[out.tensor]
        columns = [values] if out.width is None else [values[:, i] for i in range(out.width)]
        for column, array in zip(out.columns, columns):
            data[column] = pd.array(array, dtype=_TEXT) if out.dtype == "str" else array
    return pd.DataFrame(data, index=index)


def empty_frame(outputs: Sequence[OutputColumns], index: pd.Index) -> pd.DataFrame:
    arrays = {o.tensor: np.empty((0,) if o.width is None else (0, o.width),
                                 dtype=object if o.dtype == "str" else o.dtype) for o in outputs}
    return to_frame(arrays, outputs, index[:0])


def to_arrays(frame: pd.DataFrame, outputs: Sequence[OutputColumns]) -> dict[str, np.ndarray]:
    """The output columns of a whole result as arrays again, by output tensor."""
    arrays = {}
    for out in outputs:
        dtype = np.dtype(object) if out.dtype == "str" else np.dtype(out.dtype)
        values = frame[out.columns].to_numpy(dtype=dtype)
        arrays[out.tensor] = values[:, 0] if out.width is None else values
    return arrays


def frame_inputs(pipeline: Pipeline, frame: pd.DataFrame, columns: Columns | None = None) -> dict[str, np.ndarray]:
    """A pandas DataFrame's rows as the pipeline's input tensors, its columns chosen as for offline batch."""
    return {feed.tensor: feed.read(frame) for feed in plan_feeds(pipeline, frame, columns)}


def frame_outputs(pipeline: Pipeline, outputs: Mapping[str, np.ndarray], index: pd.Index) -> pd.DataFrame:
    """Output tensors as a DataFrame of one row per input row (2-D outputs as ``name_0 .. name_{k-1}``)."""
    return to_frame(outputs, plan_outputs(pipeline), index)


def read_reference(pipeline: Pipeline, path: Path) -> dict[str, np.ndarray]:
    """A pipeline's reference inputs from a file: Parquet or CSV (columns as for offline batch), NPY or NPZ."""
    if not path.is_file():
        raise WorkbenchError(f"pipeline {pipeline.name!r}: no reference file {str(path)!r}", 404)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv"):
        frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
        return frame_inputs(pipeline, frame)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    if suffix == ".npy":
        if len(pipeline.input_specs) != 1:
            raise InvalidInput(f"pipeline {pipeline.name!r} has inputs {list(pipeline.input_specs)}: a .npy "
                               "reference fits one input; write an .npz with an array per input")
        return {next(iter(pipeline.input_specs)): np.load(path, allow_pickle=False)}
    raise InvalidInput(f"reference {str(path)!r}: write Parquet, CSV, .npy or .npz")


def columns_frame(tensors: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """V2 inputs sent as the columns of a table (MLServer's ``content_type: "pd"``): one column per tensor."""
    columns: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise InvalidInput(f"tensor {name!r}: a column (content_type 'pd') has shape [rows] or [rows, 1], "
                               f"not {list(array.shape)}", name)
        columns[name] = array
    rows = {len(a) for a in columns.values()}
    if len(rows) > 1:
        raise InvalidInput(f"the columns (content_type 'pd') have different lengths: "
                           f"{ {n: len(a) for n, a in columns.items()} }")
    return pd.DataFrame(columns)


# -- reading ---------------------------------------------------------------------------


def read_dataset(source: Any, pipeline: Pipeline, batch_size: int) -> tuple[dd.DataFrame, str]:
    """The input as a Dask DataFrame, and the kind of result to hand back."""
    if isinstance(source, (str, Path)) or (isinstance(source, (list, tuple)) and source
                                           and all(isinstance(s, (str, Path)) for s in source)):
        return _read_files(source), "dask"
    if isinstance(source, dd.DataFrame):
        return source, "dask"
    if isinstance(source, dd.Series):
        return source.to_frame(), "dask"
    if isinstance(source, pd.Series):
        source = source.to_frame()
    if isinstance(source, pd.DataFrame):
        return dd.from_pandas(source, npartitions=1, sort=False), "pandas"
    if isinstance(source, np.ndarray):
        rows = max(1, 16 * batch_size)
        source = da.from_array(source, chunks=(rows, *source.shape[1:]))
    if isinstance(source, da.Array):
        return _from_array(source, pipeline), "arrays"
    raise InvalidInput(f"cannot read a {type(source).__name__}: pass Parquet or CSV paths, a pandas or Dask "
                       "DataFrame, or a NumPy or Dask array")


def _read_files(source: str | Path | Sequence[str | Path]) -> dd.DataFrame:
    paths = [str(source)] if isinstance(source, (str, Path)) else [str(s) for s in source]
    for path in paths:
        if "://" not in path and not glob.glob(path):
            raise WorkbenchError(f"no input file matches {path!r}", 404)
    first = paths[0].lower()
    where: str | list[str] = paths[0] if len(paths) == 1 else paths
    frame: dd.DataFrame
    if first.endswith((".csv", ".csv.gz", ".csv.bz2")):
        frame = dd.read_csv(where)
    elif first.endswith((".parquet", ".pq")) or Path(paths[0]).is_dir():
        frame = dd.read_parquet(where)
    else:
        raise InvalidInput(f"cannot tell the format of {paths[0]!r}: expected .parquet, .pq, .csv or a folder "
                           "of Parquet files")
    return frame


def _from_array(array: da.Array, pipeline: Pipeline) -> dd.DataFrame:
    if len(pipeline.input_specs) != 1:
        raise InvalidInput(f"an array feeds a pipeline with one input; {pipeline.name!r} has "
                           f"{list(pipeline.input_specs)}: pass a DataFrame with a column per input")
    name = next(iter(pipeline.input_specs))
    frame: dd.DataFrame
    if array.ndim == 1:
        frame = dd.from_dask_array(array, columns=name).to_frame()
    elif array.ndim == 2:
        frame = dd.from_dask_array(array.rechunk({1: -1}), columns=[f"{name}_{i}" for i in range(array.shape[1])])
    else:
        raise InvalidInput(f"input {name!r}: a {array.ndim}-D array; expected rows of 1-D or 2-D data", name)
    return frame
