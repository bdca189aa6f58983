"""A durable log of served predictions, in SQLite, written by a process of its own.

The serving path calls :meth:`PredictionLog.record_batch` once per answered
batch (or :meth:`PredictionLog.record` for one request), which only appends a
small record (references to the batch's arrays, no copy, no encoding) to a
bounded queue (a deque: no lock, no wake-up). One thread looks every
``linger_s`` and frames what gathered (each batch's merged arrays as raw bytes)
for the writer process (:mod:`workbench.monitor.predlog_writer`), which encodes
the rows and inserts them, one transaction per ``batch_rows``; the per-row work
never holds the serving process's GIL. When the queue is full the record is
dropped and counted (``stats()["dropped"]``) rather than making the request
wait. :meth:`PredictionLog.close` writes everything queued before it returns;
a writer that dies is started again, the rows it held counted as failed.

What a row holds (table ``predictions``)::

    seq           INTEGER  insertion order
    request_id    TEXT     the id the response carried
    time          REAL     Unix time the request was answered
    pipeline      TEXT     deployment name
    variant       TEXT     variant of the first inference stage (the V2 model version)
    variants      TEXT     JSON: variant of every inference stage
    input_digest  TEXT     BLAKE2b (128 bits) over each input's name, dtype, shape and values
    inputs        TEXT     JSON {name: nested list}, kept only when at most ``inputs_max_bytes``
    outputs       TEXT     JSON {name: nested list}; an output of more than ``output_max_values``
                           values (an embedding) is kept as {"dtype", "shape"} only
    latency_ms    REAL     queued to answered

NOTE: inputs are kept as compact JSON rather than ``.npy`` bytes: the rows stay
readable with any SQLite client and export to Parquet as plain strings, and the
inputs worth keeping whole (a few features, a sentence) are small; larger ones
keep their digest only, which still joins them to the data they came from.

Labels posted later (:mod:`workbench.monitor.feedback`) live in table ``labels``
(pipeline, request_id, label as JSON, time). Retention (``max_rows``,
``max_age_s``) is applied by the writer when it starts, every
``retention_interval_s`` and before it stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from workbench.batching.batch import AnsweredBatch
from workbench.monitor import predlog_writer
from workbench.monitor.predlog_writer import COLUMNS, JSON, NO_DATA, PREFIX, RAW, SCHEMA, dumps, transaction

__all__ = ["PredictionLog", "open_prediction_log", "parse_location"]

logger = logging.getLogger(__name__)

#: Most ids in one ``IN (...)``: SQLite's default limit on host parameters is 999 before 3.32.
_CHUNK = 500
#: Most records framed at once: a frame stays a few MiB at most, and the writer starts on it sooner.
_FRAME_RECORDS = 256


class _Single:
    """One request recorded on its own (:meth:`PredictionLog.record`): framed as a batch of one.

    :meth:`joined` makes one of several one-request batches, their arrays stacked.
    """

    __slots__ = ("inputs", "outputs", "predictions", "requests")

    def __init__(self, request_id: str, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
                 latency_ms: float | None) -> None:
        self.inputs = {name: np.asarray(value) for name, value in inputs.items()}
        self.outputs = {name: np.asarray(value) for name, value in outputs.items()}
        self.requests = [self.inputs]
        self.predictions = [(request_id, latency_ms)]

    @classmethod
    def joined(cls, batches: Sequence[AnsweredBatch | _Single]) -> _Single:
        """One-request batches of one layout (see :func:`_runs`) as one record of their requests."""
        joined = cls.__new__(cls)
        first = batches[0]
        joined.inputs = {name: np.concatenate([b.inputs[name] for b in batches]) for name in first.inputs}
        joined.outputs = {name: np.concatenate([b.outputs[name] for b in batches]) for name in first.outputs}
        joined.requests = [b.requests[0] for b in batches]
        joined.predictions = [answer for b in batches for answer in zip(*_answers(b))]
        return joined


def _answers(batch: AnsweredBatch | _Single) -> tuple[list[str], list[float | None]]:
    if isinstance(batch, _Single):
        return [p[0] for p in batch.predictions], [p[1] for p in batch.predictions]
    return [p.request_id for p in batch.predictions], [p.timings_ms.get("total") for p in batch.predictions]


#: One queued record: when it was answered, the pipeline, the variants that answered, the batch.
_Entry = tuple[float, str, Mapping[str, str], AnsweredBatch | _Single]


def _runs(entries: Sequence[_Entry]) -> list[list[_Entry]]:
    """``entries`` in runs that frame as one item: one-request batches in a row of one pipeline, variants
    and tensor layout (names, dtypes, shapes past the rows); every other entry alone."""
    runs: list[list[_Entry]] = []
    last: tuple[Any, ...] | None = None
    for entry in entries:
        _, pipeline, variants, batch = entry
        key = _layout(pipeline, variants, batch) if len(batch.requests) == 1 else None
        if key is not None and key == last:
            runs[-1].append(entry)
        else:
            runs.append([entry])
        last = key
    return runs


def _layout(pipeline: str, variants: Mapping[str, str], batch: AnsweredBatch | _Single) -> tuple[Any, ...] | None:
    arrays = (*batch.inputs.items(), *batch.outputs.items())
    if not all(isinstance(value, np.ndarray) and value.ndim > 0 for _, value in arrays):
        return None
    return (pipeline, tuple(variants.items()), len(batch.inputs),
            *((name, value.dtype.str, value.shape[1:]) for name, value in arrays))


class _Framer:
    """Frames queued records for the writer: a JSON header and the arrays' bytes, no per-row work."""

    def __init__(self, output_max_values: int) -> None:
        self.output_max_values = output_max_values

    def frame(self, entries: Sequence[_Entry]) -> list[Any]:
        header: list[dict[str, Any]] = []
        data: list[Any] = []
        for run in _runs(entries):
            at, pipeline, variants, batch = run[0]
            times: float | list[float] = at
            if len(run) > 1:
                # NOTE: one-request batches (a light load) joined into one item: one array each, not one a request.
                batch, times = _Single.joined([entry[3] for entry in run]), [entry[0] for entry in run]
            ids, latencies = _answers(batch)
            rows = [next(iter(r.values())).shape[0] if r else 0 for r in batch.requests]
            item: dict[str, Any] = {"t": times, "p": pipeline, "v": dict(variants), "ids": ids, "lat": latencies,
                                    "rows": rows}
            if len(batch.requests) == 1 or self._unpadded(batch):
                item["in"] = [self._array(name, value, data) for name, value in batch.inputs.items()]
            else:
                item["in_each"] = [[self._array(name, value, data) for name, value in r.items()]
                                   for r in batch.requests]
            fewest = min(rows, default=0)
            item["out"] = [self._array(name, value, data, over=fewest * math.prod(np.shape(value)[1:])
                                       > self.output_max_values) for name, value in batch.outputs.items()]
            header.append(item)
        head = dumps(header)
        return [PREFIX.pack(len(head), sum(len(part) for part in data)), head, *data]

    @staticmethod
    def _unpadded(batch: AnsweredBatch | _Single) -> bool:
        """Whether the merged inputs are the requests' own, stacked (no request was padded)."""
        return all(r[name].shape[1:] == merged.shape[1:] for name, merged in batch.inputs.items()
                   for r in batch.requests)

    @staticmethod
    def _array(name: str, value: Any, data: list[Any], over: bool = False) -> list[Any]:
        array = np.asarray(value)
        shape = list(array.shape)
        if over:
            return [name, array.dtype.str, shape, 0, NO_DATA]
        if array.dtype.kind in "OUS":
            part: Any = dumps(array)
            how = JSON
        else:
            part = np.ascontiguousarray(array).data.cast("B")
            how = RAW
        data.append(part)
        return [name, array.dtype.str, shape, len(part), how]


def parse_location(value: str | Path | None, home: Path) -> Path | None:
    """Where the log lives: a path or ``sqlite:///path`` URL; ``None``: the default file in ``home``; ``off``: none.

    Examples
    --------
    >>> parse_location("sqlite:////data/p.sqlite", Path("/home"))
    PosixPath('/data/p.sqlite')
    >>> parse_location("off", Path("/home")) is None
    True
    """
    if value is None:
        return home / "predictions.sqlite"
    text = str(value).strip()
    if text.lower() in ("", "off", "none", "false", "0"):
        return None
    if text.startswith("sqlite:"):
        # NOTE: SQLAlchemy's convention: sqlite:///relative.db and sqlite:////absolute.db
        if not text.startswith("sqlite:///") or text == "sqlite:///" or text.endswith(":memory:"):
            raise ValueError(f"prediction log URL must be sqlite:///<file path>, not {text!r}")
        return Path(text[len("sqlite:///"):])
    return Path(text)


def open_prediction_log() -> PredictionLog | None:
    """The log the settings ask for (``WORKBENCH_PREDICTION_LOG`` and its bounds), or ``None`` when it is off."""
    from workbench.config import WorkbenchSettings

    settings = WorkbenchSettings()
    path = parse_location(settings.prediction_log, settings.home)
    if path is None:
        return None
    return PredictionLog(path, max_rows=settings.prediction_log_max_rows, max_age_s=settings.prediction_log_max_age_s)


class PredictionLog:
    """Predictions logged to a SQLite file by a writer process, fed by one thread of this process.

    Parameters
    ----------
    path
        The SQLite file (created with its folder; WAL journal mode).
    max_rows
        Most rows kept; the oldest go first. ``None``: no bound by count.
    max_age_s
        Rows older than this are deleted. ``None``: no bound by age.
    max_queue
        Records (answered batches) waiting to be framed at most; beyond, new ones are dropped and counted.
    inputs_max_bytes
        Inputs whose JSON is larger are stored as their digest only.
    output_max_values
        Outputs with more values are stored as their dtype and shape only.
    retention_interval_s
        Seconds between two applications of the retention bounds.
    batch_rows
        Most rows written in one transaction.
    linger_s
        How long records gather once one arrives, before they go to the writer.
    nice
        How much lower the writer process's scheduling priority is: the front answers first.

    Examples
    --------
    >>> log = PredictionLog(tmp_path / "p.sqlite")  # doctest: +SKIP
    >>> log.record("id-1", "tabular", {"model": "gbt"}, {"x": np.ones((1, 3))}, {"label": np.array(["a"])}, 2.5)
    >>> log.close()  # writes what is queued
    """

    def __init__(self, path: str | Path, *, max_rows: int | None = 1_000_000, max_age_s: float | None = None,
                 max_queue: int = 10_000, inputs_max_bytes: int = 4096, output_max_values: int = 1024,
                 retention_interval_s: float = 30.0, batch_rows: int = 512, linger_s: float = 0.05,
                 nice: int = 5) -> None:
        if max_rows is not None and max_rows < 1:
            raise ValueError("max_rows must be an integer >= 1 (or None for no bound)")
        if max_age_s is not None and not max_age_s > 0:
            raise ValueError("max_age_s must be > 0 (or None for no bound)")
        if max_queue < 1:
            raise ValueError("max_queue must be an integer >= 1")
        if not retention_interval_s > 0:
            raise ValueError("retention_interval_s must be > 0")
        self.path = Path(path)
        self.max_rows, self.max_age_s = max_rows, max_age_s
        self.inputs_max_bytes, self.output_max_values = inputs_max_bytes, output_max_values
        self.retention_interval_s, self.batch_rows = retention_interval_s, max(1, batch_rows)
        self.linger_s = max(0.0, linger_s)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(predlog_writer.connect(self.path)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        self._options = {"max_rows": max_rows, "max_age_s": max_age_s, "inputs_max_bytes": inputs_max_bytes,
                         "output_max_values": output_max_values, "retention_interval_s": retention_interval_s,
                         "batch_rows": self.batch_rows, "nice": nice}
        self._framer = _Framer(output_max_values)
        # NOTE: a deque's append and popleft are atomic: the request path takes no lock and wakes nobody
        # (queue.Queue's put took a lock and notified the writer: 3 µs of the serving thread a request).
        self._queue: deque[_Entry] = deque()
        self.max_queue = max_queue
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._accepted = self._sent = self._written = self._failed = self._dropped = 0
        self.restarts = 0
        self._closed = False
        self._stop_timeout_s = 60.0
        self._writer: subprocess.Popen[bytes] | None = None
        self._acks: threading.Thread | None = None
        self._start_writer()
        self._thread = threading.Thread(target=self._send_loop, name=f"prediction-log:{self.path.name}", daemon=True)
        self._thread.start()

    # -- the request path --------------------------------------------------------------
    def record(self, request_id: str, pipeline: str, variants: Mapping[str, str], inputs: Mapping[str, np.ndarray],
               outputs: Mapping[str, np.ndarray], latency_ms: float | None) -> bool:
        """Queue one answered request for writing; never blocks. ``False``: dropped (queue full or log closed).

        NOTE: the arrays are referenced, not copied: the serving path never writes to them after answering.
        """
        return self._put(pipeline, variants, _Single(request_id, inputs, outputs, latency_ms), 1)

    def record_batch(self, pipeline: str, variants: Mapping[str, str], batch: AnsweredBatch) -> bool:
        """Queue every request of one answered batch, in one record; never blocks. ``False``: dropped.

        NOTE: one append for the batch, whatever its size: its arrays are framed by the log's thread.
        """
        return self._put(pipeline, variants, batch, len(batch.predictions))

    def _put(self, pipeline: str, variants: Mapping[str, str], batch: AnsweredBatch | _Single, count: int) -> bool:
        # NOTE: += on an int attribute is not atomic across threads, but only the loop thread records:
        # the counts are exact there, and merely approximate if several threads record at once.
        if self._closed or len(self._queue) >= self.max_queue:
            self._dropped += count
            return False
        self._queue.append((time.time(), pipeline, variants, batch))
        self._accepted += count
        return True

    # -- feeding the writer ------------------------------------------------------------
    def _start_writer(self) -> None:
        # NOTE: -P: the script's folder (this package's) is not put on sys.path, where its modules would
        # shadow others; the writer imports nothing of the workbench.
        self._writer = subprocess.Popen(
            [sys.executable, "-P", predlog_writer.__file__, str(self.path), json.dumps(self._options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self._acks = threading.Thread(target=self._read_acks, args=(self._writer,),
                                      name=f"prediction-log-acks:{self.path.name}", daemon=True)
        self._acks.start()

    def _read_acks(self, writer: subprocess.Popen[bytes]) -> None:
        assert writer.stdout is not None
        for line in writer.stdout:
            written, failed = (int(part) for part in line.split())
            with self._done:
                self._written += written
                self._failed += failed
                self._done.notify_all()
        writer.stdout.close()
        writer.wait()
        self._count_lost()

    def _count_lost(self) -> None:
        """What was sent to a writer that is gone and never acknowledged counts as failed."""
        with self._done:
            lost = self._sent - self._written - self._failed
            if lost > 0:
                self._failed += lost
            self._done.notify_all()

    def _send_loop(self) -> None:
        pending = self._queue
        while True:
            # NOTE: woken early only by flush() and close(); otherwise records gather for linger_s.
            self._wake.wait(max(self.linger_s, 0.001))
            self._wake.clear()
            stopping = self._closed
            while pending:
                entries: list[_Entry] = []
                while pending and len(entries) < _FRAME_RECORDS:
                    entries.append(pending.popleft())
                self._send(entries)
            if stopping:
                break
        self._stop_writer()

    def _send(self, entries: list[_Entry]) -> None:
        count = sum(len(_answers(batch)[0]) for _, _, _, batch in entries)
        writer = self._writer
        try:
            parts = self._framer.frame(entries)
        except Exception:  # NOTE: a record that cannot be framed must not stop the log; counted and logged
            logger.exception("could not frame %d predictions for %s", count, self.path)
            with self._done:
                self._failed += count
                self._done.notify_all()
            return
        if writer is None or writer.poll() is not None:
            self._restart_writer()
            writer = self._writer
        assert writer is not None and writer.stdin is not None
        with self._done:
            self._sent += count
        try:
            writer.stdin.writelines(parts)
            writer.stdin.flush()
        except (OSError, ValueError):
            logger.error("the prediction log writer for %s stopped; %d predictions are lost", self.path, count)
            self._restart_writer()

    def _restart_writer(self) -> None:
        old, acks = self._writer, self._acks
        if old is not None:
            with contextlib.suppress(OSError, ValueError):
                old.stdin.close()  # type: ignore[union-attr]
            old.kill()
            if acks is not None:
                acks.join()
        self._count_lost()
        self.restarts += 1
        logger.warning("starting the prediction log writer for %s again (exit code %s)", self.path,
                       None if old is None else old.returncode)
        self._start_writer()

    def _stop_writer(self) -> None:
        writer, acks = self._writer, self._acks
        if writer is None:
            return
        with contextlib.suppress(OSError, ValueError):
            writer.stdin.close()  # type: ignore[union-attr]
        try:
            writer.wait(self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            logger.error("the prediction log writer for %s did not finish in %g s; stopping it", self.path,
                         self._stop_timeout_s)
            writer.kill()
        if acks is not None:
            acks.join()

    # -- off the request path ------------------------------------------------------------
    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Wait until every record queued before the call is written (or failed). Blocking: not on the loop."""
        target = self._accepted
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._written + self._failed >= target, timeout_s)

    def close(self, timeout_s: float = 60.0) -> None:
        """Write everything queued, then stop the writer. Blocking: call it off the event loop."""
        if self._closed:
            return
        self._stop_timeout_s = timeout_s
        self._closed = True
        self._wake.set()
        self._thread.join(timeout_s + 5)

    def stats(self) -> dict[str, Any]:
        """Where the log is, and how many records were queued, written, failed, dropped and are waiting."""
        return {"path": str(self.path), "accepted": self._accepted, "written": self._written, "failed": self._failed,
                "dropped": self._dropped, "queued": max(self._accepted - self._written - self._failed, 0),
                "max_rows": self.max_rows, "max_age_s": self.max_age_s, "closed": self._closed,
                "writer_pid": self._writer.pid if self._writer is not None else None, "restarts": self.restarts}

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own, for one thread, closed at the end of the block."""
        with closing(predlog_writer.connect(self.path)) as db:
            yield db

    def count(self, pipeline: str | None = None) -> int:
        """Rows kept (of ``pipeline``, or all)."""
        with self.reading() as db:
            where, args = ("WHERE pipeline = ?", (pipeline,)) if pipeline else ("", ())
            return int(db.execute(f"SELECT count(*) FROM predictions {where}", args).fetchone()[0])

    def rows(self, pipeline: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        """The rows kept, oldest first, with their label (JSON) where one was posted."""
        clauses: list[str] = []
        args: list[Any] = []
        if pipeline is not None:
            clauses.append("p.pipeline = ?")
            args.append(pipeline)
        if since is not None:
            clauses.append("p.time >= ?")
            args.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.reading() as db:
            db.row_factory = sqlite3.Row
            cursor = db.execute(
                f"SELECT {', '.join('p.' + c for c in COLUMNS)}, l.label FROM predictions p LEFT JOIN labels l "
                f"ON l.pipeline = p.pipeline AND l.request_id = p.request_id {where} ORDER BY p.seq", args)
            return [dict(row) for row in cursor]

    def find(self, pipeline: str, request_ids: Sequence[str]) -> dict[str, tuple[str | None, str, str | None]]:
        """The latest logged prediction of each id found: ``{id: (variant, outputs JSON, label JSON or None)}``."""
        found: dict[str, tuple[str | None, str, str | None]] = {}
        with self.reading() as db:
            for start in range(0, len(request_ids), _CHUNK):
                chunk = list(request_ids[start:start + _CHUNK])
                cursor = db.execute(
                    "SELECT p.request_id, p.variant, p.outputs, l.label FROM predictions p LEFT JOIN labels l "
                    "ON l.pipeline = p.pipeline AND l.request_id = p.request_id "
                    f"WHERE p.pipeline = ? AND p.request_id IN ({', '.join('?' * len(chunk))}) ORDER BY p.seq",
                    [pipeline, *chunk])
                for request_id, variant, outputs, label in cursor:
                    found[request_id] = (variant, outputs, label)
        return found

    def save_labels(self, pipeline: str, labels: Iterable[tuple[str, str]]) -> None:
        """Keep ``(request_id, label JSON)`` pairs; a later label for an id replaces the earlier one."""
        now = time.time()
        with self.reading() as db, transaction(db):
            db.executemany("INSERT OR REPLACE INTO labels (pipeline, request_id, label, time) VALUES (?, ?, ?, ?)",
                           [(pipeline, request_id, label, now) for request_id, label in labels])

    def labelled(self) -> list[tuple[str, str | None, str, str]]:
        """Every labelled prediction kept: ``(pipeline, variant, outputs JSON, label JSON)``."""
        with self.reading() as db:
            return list(db.execute(
                "SELECT p.pipeline, p.variant, p.outputs, l.label FROM labels l JOIN predictions p "
                "ON p.pipeline = l.pipeline AND p.request_id = l.request_id "
                "AND p.seq = (SELECT max(seq) FROM predictions q WHERE q.pipeline = l.pipeline "
                "AND q.request_id = l.request_id)"))

    def export_parquet(self, path: str | Path, pipeline: str | None = None, since: float | None = None) -> int:
        """Write the rows kept (of ``pipeline``, from Unix time ``since``) and their labels to a Parquet file.

        Waits for what is queued to be written first. The JSON columns (``variants``, ``inputs``,
        ``outputs``, ``label``) stay strings. Returns the number of rows written.

        Examples
        --------
        >>> log.export_parquet("predictions.parquet", pipeline="tabular")  # doctest: +SKIP
        120
        """
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        self.flush()
        rows = self.rows(pipeline, since)
        schema = pa.schema([("request_id", pa.string()), ("time", pa.float64()), ("pipeline", pa.string()),
                            ("variant", pa.string()), ("variants", pa.string()), ("input_digest", pa.string()),
                            ("inputs", pa.string()), ("outputs", pa.string()), ("latency_ms", pa.float64()),
                            ("label", pa.string())])
        table = pa.Table.from_pylist(rows, schema=schema)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return int(table.num_rows)
