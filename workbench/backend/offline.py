"""Offline batch: one pipeline mapped over a whole dataset, partition by partition.

The data comes in as Parquet or CSV files (paths, folders, globs), a pandas or
Dask DataFrame, or a NumPy or Dask array (:mod:`workbench.backend.dataset` says
which columns feed which input). Each partition is one task: the worker that
runs it feeds the partition to the pipeline in chunks of ``batch_size`` rows
and returns the outputs as columns, in the partition's row order and with its
index. The pipeline is built once per worker and kept warm: a deployed
pipeline is taken from the deployment's
:class:`~workbench.backend.worker.DeploymentPlugin`; any other is built by the
:class:`PipelineCache` worker plugin, keyed by a hash of its spec.

The result is of the kind of the input: Parquet files written to a folder when
a destination is given (``part.00000.parquet`` onwards, in row order, with the
input's index when it has a name), else a Dask DataFrame (files or a Dask
DataFrame in), a pandas DataFrame (pandas in) or a dict of NumPy arrays by
output name (an array in). On a cluster, Dask's own progress bar follows the tasks (a text bar in a
terminal, a widget in a notebook). In-process, Dask's synchronous scheduler
runs the same graph in this process, under Dask's local progress bar.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.base import compute, persist
from distributed import Client, WorkerPlugin, get_worker

from workbench._sync import run_in_threadpool
from workbench.backend.dataset import (
    Columns,
    Feed,
    OutputColumns,
    empty_frame,
    plan_feeds,
    plan_outputs,
    read_dataset,
    to_arrays,
    to_frame,
)
from workbench.backend.worker import DeploymentPlugin
from workbench.errors import BackendUnavailable, InvalidInput, WorkbenchError
from workbench.pipeline.graph import Pipeline

__all__ = ["CACHE_PLUGIN", "DEFAULT_BATCH_SIZE", "BatchReport", "Columns", "PipelineCache", "run_batch"]

#: Rows per pipeline call inside a partition, unless the caller says otherwise.
DEFAULT_BATCH_SIZE = 256
#: Worker-plugin name of the per-worker pipeline cache.
CACHE_PLUGIN = "workbench/offline"
#: Pipelines a worker keeps built for offline batches (least recently used goes first).
_CACHE_SIZE = 4


@dataclass(slots=True)
class BatchReport:
    """What an offline batch did.

    ``output`` is ``None`` when the predictions were written to ``destination``;
    otherwise a Dask DataFrame (files or a Dask DataFrame in), a pandas
    DataFrame (pandas in), or a dict of NumPy arrays by output name (an array in).
    """

    rows: int
    seconds: float
    partitions: int
    workers: int
    batch_size: int
    backend: str
    destination: str | None = None
    output: Any = field(default=None, repr=False)
    rows_per_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.rows_per_s = self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        written = f", written to {self.destination}" if self.destination else ""
        return (f"{self.rows} rows in {self.seconds:.2f} s: {self.rows_per_s:,.0f} rows/s on {self.workers} "
                f"worker(s) ({self.backend}, {self.partitions} partitions, batches of {self.batch_size}){written}")


class PipelineCache(WorkerPlugin):
    """Pipelines built on a worker for offline batches, kept warm across partitions and runs.

    Registering it again (every batch does) keeps the copy already on the worker.
    """

    idempotent = True
    name = CACHE_PLUGIN

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self.size = size
        self.builds = 0

    def setup(self, worker: Any = None) -> None:
        # NOTE: made here, not in __init__: the plugin is pickled to the workers, and a lock is not.
        self._lock = threading.Lock()
        self._pipelines: OrderedDict[str, Pipeline] = OrderedDict()

    def teardown(self, worker: Any = None) -> None:
        self._pipelines.clear()

    def get(self, key: str, spec: Mapping[str, Any]) -> Pipeline:
        """The pipeline of ``spec`` (hashed as ``key``), built on first use."""
        # NOTE: a worker with several threads runs partitions side by side; the lock makes
        # the first of them build the pipeline while the others wait for it.
        with self._lock:
            pipeline = self._pipelines.get(key)
            if pipeline is None:
                pipeline = self._pipelines[key] = Pipeline.from_dict(spec)
                self.builds += 1
                while len(self._pipelines) > self.size:
                    self._pipelines.popitem(last=False)
            self._pipelines.move_to_end(key)
            return pipeline

    def keys(self) -> list[str]:
        return list(self._pipelines)


# -- where a task finds its pipeline ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _OnWorker:
    """The pipeline on the worker that runs the task: the deployment's, else the cache's."""

    key: str
    spec: dict[str, Any] = field(repr=False)
    deployment: str | None = None

    def get(self) -> Pipeline:
        worker = get_worker()
        if self.deployment is not None:
            plugin = worker.plugins.get(self.deployment)
            if isinstance(plugin, DeploymentPlugin) and plugin.pipeline is not None:
                return plugin.pipeline
        # NOTE: a deployment swapped or undeployed mid-run falls back to the cache, which
        # builds the same spec, so every partition of a run sees the same pipeline.
        cache = worker.plugins.get(CACHE_PLUGIN)
        if not isinstance(cache, PipelineCache):
            raise BackendUnavailable(f"worker {worker.address} has no {CACHE_PLUGIN!r} plugin")
        return cache.get(self.key, self.spec)

    def __dask_tokenize__(self) -> tuple[str, str | None]:
        return self.key, self.deployment


@dataclass(frozen=True, slots=True)
class _Here:
    """The pipeline already built in this process (the in-process backend)."""

    key: str
    pipeline: Pipeline = field(repr=False)

    def get(self) -> Pipeline:
        return self.pipeline

    def __dask_tokenize__(self) -> str:
        return self.key


def spec_key(pipeline: Pipeline) -> str:
    """A short hash of the pipeline's spec: the same spec gives the same key on every machine."""
    text = json.dumps(pipeline.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Job:
    """Everything a partition task needs; ``run`` makes each call a fresh computation."""

    source: _OnWorker | _Here
    feeds: tuple[Feed, ...]
    outputs: tuple[OutputColumns, ...]
    batch_size: int
    run: str


def predict_partition(frame: pd.DataFrame, job: _Job, partition_info: Mapping[str, Any] | None = None
                      ) -> pd.DataFrame:
    """Run one partition through the pipeline in chunks of ``job.batch_size`` rows (a Dask task)."""
    if len(frame) == 0:
        return empty_frame(job.outputs, frame.index)
    pipeline = job.source.get()
    tensors = {feed.tensor: feed.read(frame) for feed in job.feeds}
    chunks: dict[str, list[np.ndarray]] = {o.tensor: [] for o in job.outputs}
    for start in range(0, len(frame), job.batch_size):
        try:
            prediction = pipeline.predict({n: t[start:start + job.batch_size] for n, t in tensors.items()})
        except InvalidInput as exc:
            number = partition_info["number"] if partition_info else "?"
            last = min(start + job.batch_size, len(frame)) - 1
            raise InvalidInput(f"partition {number}, rows {start}..{last}: {exc.message}",
                               exc.tensor) from exc
        for name, parts in chunks.items():
            parts.append(prediction.outputs[name])
    return to_frame({n: np.concatenate(parts) for n, parts in chunks.items()}, job.outputs, frame.index)


def _part_name(index: int) -> str:
    # NOTE: zero-padded so that the files sort in row order by name too.
    return f"part.{index:05d}.parquet"


def _check_destination(destination: str, overwrite: bool) -> None:
    if "://" in destination:
        return
    path = Path(destination)
    if path.is_file():
        raise WorkbenchError(f"destination {destination!r} is a file; Parquet output goes to a folder", 409)
    if not overwrite and path.is_dir() and any(path.iterdir()):
        raise WorkbenchError(f"destination {destination!r} is not empty; pass overwrite=True (--overwrite) to "
                             "replace it", 409)


# -- running ---------------------------------------------------------------------------


class _Scheduler(Protocol):
    kind: str
    workers: int
    threads: int

    def persist(self, collection: dd.DataFrame, progress: bool) -> dd.DataFrame: ...
    def compute(self, *collections: Any) -> list[Any]: ...


class _Cluster:
    """A Dask cluster, through the engine's client (used from a thread other than its loop's)."""

    kind = "dask"

    def __init__(self, client: Client) -> None:
        # NOTE: the client is asynchronous on the engine's loop; called from another thread,
        # distributed runs each call on that loop and blocks this thread until it is done.
        self.client: Any = client
        self.client.register_plugin(PipelineCache(), name=CACHE_PLUGIN)
        nthreads = self.client.nthreads()
        self.workers = len(nthreads)
        self.threads = sum(nthreads.values())
        if not self.workers:
            raise BackendUnavailable("the cluster has no workers to run the batch")

    def persist(self, collection: dd.DataFrame, progress: bool) -> dd.DataFrame:
        persisted: dd.DataFrame = self.client.persist(collection)
        if progress:
            _progress(persisted, self.client.scheduler.address)
        return persisted

    def compute(self, *collections: Any) -> list[Any]:
        return list(self.client.gather(self.client.compute(list(collections))))


class _Local:
    """This process: Dask's synchronous scheduler, under Dask's local progress bar."""

    kind = "inprocess"
    workers = 1
    threads = 1

    def persist(self, collection: dd.DataFrame, progress: bool) -> dd.DataFrame:
        from dask.diagnostics.progress import ProgressBar

        with ProgressBar() if progress else contextlib.nullcontext():
            persisted: dd.DataFrame = persist(collection, scheduler="sync")[0]
        return persisted

    def compute(self, *collections: Any) -> list[Any]:
        return list(compute(*collections, scheduler="sync"))


def _progress(persisted: dd.DataFrame, scheduler: str) -> None:
    """Dask's progress bar until the tasks are done: a widget in a notebook, a text bar elsewhere."""
    from distributed import progress
    from distributed.utils import LoopRunner, is_kernel

    if not is_kernel():
        progress(persisted, scheduler=scheduler, notebook=False)
        return
    from IPython.display import display

    bar = progress(persisted, scheduler=scheduler, notebook=True)
    display(bar.widget)
    # NOTE: the widget's own start listens on the caller's loop, which a blocking
    # `Workbench.batch` holds; this thread follows the scheduler instead, as the text bar does.
    LoopRunner().run_sync(bar.listen)


def _execute(scheduler: _Scheduler, frame: dd.DataFrame, job: _Job, kind: str, destination: str | None,
             overwrite: bool, progress: bool, began: float) -> BatchReport:
    if frame.npartitions < 2 * scheduler.threads:
        # NOTE: two partitions per worker thread at least, so every worker gets work and
        # the last partitions to finish are small.
        frame = frame.repartition(npartitions=2 * scheduler.threads)
    meta = empty_frame(job.outputs, frame._meta.index)
    mapped = frame.map_partitions(predict_partition, job, meta=meta, align_dataframes=False)
    # NOTE: the predictions (not the input) stay on the workers until written or handed back.
    persisted = scheduler.persist(mapped, progress)
    # NOTE: the row count waits for every partition (and raises the first failure); what
    # else the caller wants goes in the same call, to spare a round trip.
    lengths = persisted.map_partitions(len)
    output: Any = None
    if destination is not None:
        # NOTE: files keep the row order; an unnamed index (read_parquet and read_csv number each
        # file's rows from 0) says nothing more, so only a named one is written.
        write = persisted.to_parquet(destination, compute=False, name_function=_part_name, overwrite=overwrite,
                                     write_index=persisted.index.name is not None)
        lengths, _ = scheduler.compute(lengths, write)
    elif kind == "dask":
        lengths, output = scheduler.compute(lengths)[0], persisted
    else:
        lengths, output = scheduler.compute(lengths, persisted)
        output = to_arrays(output, job.outputs) if kind == "arrays" else output
    return BatchReport(rows=int(lengths.sum()), seconds=time.perf_counter() - began,
                       partitions=persisted.npartitions, workers=scheduler.workers, batch_size=job.batch_size,
                       backend=scheduler.kind, destination=destination, output=output)


def _run(client: Client | None, pipeline: Pipeline, source: Any, destination: str | None, deployment: str | None,
         batch_size: int, columns: Columns | None, overwrite: bool, progress: bool) -> BatchReport:
    began = time.perf_counter()
    if destination is not None:
        _check_destination(destination, overwrite)
    frame, kind = read_dataset(source, pipeline, batch_size)
    feeds = plan_feeds(pipeline, frame._meta, columns)
    outputs = plan_outputs(pipeline)
    key = spec_key(pipeline)
    scheduler: _Scheduler
    where: _OnWorker | _Here
    if client is None:
        scheduler, where = _Local(), _Here(key, pipeline)
    else:
        scheduler, where = _Cluster(client), _OnWorker(key, pipeline.to_dict(), deployment)
    job = _Job(where, feeds, outputs, batch_size, uuid.uuid4().hex)
    return _execute(scheduler, frame, job, kind, destination, overwrite, progress, began)


async def run_batch(pipeline: Pipeline, source: Any, destination: str | Path | None = None, *,
                    client: Client | None = None, deployment: str | None = None, batch_size: int | None = None,
                    columns: Columns | None = None, overwrite: bool = False, progress: bool = True) -> BatchReport:
    """Map ``pipeline`` over a dataset on a Dask cluster, or in this process; see the module docstring.

    Parameters
    ----------
    pipeline
        The pipeline; on a cluster it need not be loaded here (the workers build it).
    source
        Parquet or CSV paths (a file, a folder, a glob or a list), a pandas or Dask
        DataFrame, or a NumPy or Dask array (for a pipeline with one input).
    destination
        A folder to write the predictions to as Parquet (``part.00000.parquet``, ...);
        ``None`` hands them back in :attr:`BatchReport.output`.
    client
        The Dask client of the cluster to run on; ``None`` runs in this process.
    deployment
        The worker-plugin name of the deployment whose warm pipeline the workers use.
    batch_size
        Rows per pipeline call inside a partition (default :data:`DEFAULT_BATCH_SIZE`).
    columns
        The columns that feed the inputs, when the names do not say it.
    overwrite
        Replace a destination folder that is not empty.
    progress
        Show Dask's progress bar.

    Examples
    --------
    >>> report = await run_batch(pipeline, "data/*.parquet", "predictions/", client=client)  # doctest: +SKIP
    >>> report.rows, report.seconds, report.rows_per_s                                        # doctest: +SKIP
    """
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError("batch_size must be an integer >= 1")
    target = None if destination is None else str(destination)
    return await run_in_threadpool(_run, client, pipeline, source, target, deployment, batch_size, columns,
                                   overwrite, progress)
