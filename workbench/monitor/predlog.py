"""A durable log of served predictions, in SQLite, written off the request path.

The serving path calls :meth:`PredictionLog.record_batch` once per answered
batch (or :meth:`PredictionLog.record` for one request), which only appends a
small record (references to the requests' arrays, no copy, no encoding) to a
bounded queue (a deque: no lock, no wake-up); one background thread looks every
``linger_s``, encodes the records row by row and inserts them in bulk, one
transaction per ``batch_rows``. When the queue is full the record is dropped and
counted (``stats()["dropped"]``) rather than making the request wait.
:meth:`PredictionLog.close` writes everything queued before it returns.

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
``max_age_s``) is applied by the writer thread when it opens the file and every
``retention_interval_s``.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from workbench.batching.batch import AnsweredBatch

__all__ = ["PredictionLog", "open_prediction_log", "parse_location"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL, time REAL NOT NULL, pipeline TEXT NOT NULL,
    variant TEXT, variants TEXT, input_digest TEXT NOT NULL, inputs TEXT, outputs TEXT NOT NULL, latency_ms REAL
);
CREATE INDEX IF NOT EXISTS predictions_request ON predictions (pipeline, request_id);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time);
CREATE TABLE IF NOT EXISTS labels (
    pipeline TEXT NOT NULL, request_id TEXT NOT NULL, label TEXT NOT NULL, time REAL NOT NULL,
    PRIMARY KEY (pipeline, request_id)
);
"""
_COLUMNS = ("request_id", "time", "pipeline", "variant", "variants", "input_digest", "inputs", "outputs",
            "latency_ms")
_INSERT = f"INSERT INTO predictions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
#: Most ids in one ``IN (...)``: SQLite's default limit on host parameters is 999 before 3.32.
_CHUNK = 500


@dataclass(slots=True)
class _Record:
    request_id: str
    time: float
    pipeline: str
    variants: Mapping[str, str]
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    latency_ms: float | None


@dataclass(slots=True)
class _Batch:
    """The requests of one answered batch, written as one row each."""

    time: float
    pipeline: str
    variants: Mapping[str, str]
    batch: AnsweredBatch

    def records(self) -> Iterator[_Record]:
        for inputs, answer in zip(self.batch.requests, self.batch.predictions):
            yield _Record(answer.request_id, self.time, self.pipeline, self.variants, inputs, answer.outputs,
                          answer.timings_ms.get("total"))


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
    """Predictions logged to a SQLite file by one background thread.

    Parameters
    ----------
    path
        The SQLite file (created with its folder; WAL journal mode).
    max_rows
        Most rows kept; the oldest go first. ``None``: no bound by count.
    max_age_s
        Rows older than this are deleted. ``None``: no bound by age.
    max_queue
        Records waiting to be written at most; beyond, new ones are dropped and counted.
    inputs_max_bytes
        Inputs whose JSON is larger are stored as their digest only.
    output_max_values
        Outputs with more values are stored as their dtype and shape only.
    retention_interval_s
        Seconds between two applications of the retention bounds.
    batch_rows
        Most rows written in one transaction.
    linger_s
        How long the writer lets records gather once one arrives, before it writes them.

    Examples
    --------
    >>> log = PredictionLog(tmp_path / "p.sqlite")  # doctest: +SKIP
    >>> log.record("id-1", "tabular", {"model": "gbt"}, {"x": np.ones((1, 3))}, {"label": np.array(["a"])}, 2.5)
    >>> log.close()  # writes what is queued
    """

    def __init__(self, path: str | Path, *, max_rows: int | None = 1_000_000, max_age_s: float | None = None,
                 max_queue: int = 10_000, inputs_max_bytes: int = 4096, output_max_values: int = 1024,
                 retention_interval_s: float = 30.0, batch_rows: int = 512, linger_s: float = 0.05) -> None:
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
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        # NOTE: a deque's append and popleft are atomic: the request path takes no lock and wakes nobody
        # (queue.Queue's put took a lock and notified the writer: 3 µs of the serving thread a request).
        self._queue: deque[_Record | _Batch] = deque()
        self.max_queue = max_queue
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._accepted = self._written = self._failed = self._dropped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name=f"prediction-log:{self.path.name}", daemon=True)
        self._thread.start()

    # -- the request path --------------------------------------------------------------
    def record(self, request_id: str, pipeline: str, variants: Mapping[str, str], inputs: Mapping[str, np.ndarray],
               outputs: Mapping[str, np.ndarray], latency_ms: float | None) -> bool:
        """Queue one answered request for writing; never blocks. ``False``: dropped (queue full or log closed).

        NOTE: the arrays are referenced, not copied: the serving path never writes to them after answering.
        """
        # NOTE: += on an int attribute is not atomic across threads, but only the loop thread records:
        # the counts are exact there, and merely approximate if several threads record at once.
        if self._closed or len(self._queue) >= self.max_queue:
            self._dropped += 1
            return False
        self._queue.append(_Record(request_id, time.time(), pipeline, variants, inputs, outputs, latency_ms))
        self._accepted += 1
        return True

    def record_batch(self, pipeline: str, variants: Mapping[str, str], batch: AnsweredBatch) -> bool:
        """Queue every request of one answered batch, in one record; never blocks. ``False``: dropped.

        NOTE: one append for the batch, whatever its size: the rows are made by the log's thread.
        """
        count = len(batch.predictions)
        if self._closed or len(self._queue) >= self.max_queue:
            self._dropped += count
            return False
        self._queue.append(_Batch(time.time(), pipeline, variants, batch))
        self._accepted += count
        return True

    # -- writing -----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _write_loop(self) -> None:
        db = self._connect()
        pending = self._queue
        try:
            self._apply_retention(db)
            next_retention = time.monotonic() + self.retention_interval_s
            while True:
                # NOTE: woken early only by flush() and close(); otherwise records gather for linger_s, and
                # are written a transaction per batch_rows.
                self._wake.wait(max(self.linger_s, 0.001))
                self._wake.clear()
                stopping = self._closed
                while pending:
                    batch: list[_Record] = []
                    while pending and len(batch) < self.batch_rows:
                        entry = pending.popleft()
                        if isinstance(entry, _Batch):
                            batch.extend(entry.records())
                        else:
                            batch.append(entry)
                    self._write(db, batch)
                if time.monotonic() >= next_retention or stopping:
                    self._apply_retention(db)
                    next_retention = time.monotonic() + self.retention_interval_s
                if stopping:
                    return
        finally:
            db.close()

    def _write(self, db: sqlite3.Connection, batch: list[_Record]) -> None:
        failed = 0
        try:
            rows = [self._row(r) for r in batch]
            with _transaction(db):
                db.executemany(_INSERT, rows)
        except Exception:  # NOTE: one bad batch must not stop the writer; it is counted and logged
            logger.exception("could not log %d predictions to %s", len(batch), self.path)
            failed = len(batch)
        with self._done:
            self._written += len(batch) - failed
            self._failed += failed
            self._done.notify_all()

    def _row(self, r: _Record) -> tuple[Any, ...]:
        digest = hashlib.blake2b(digest_size=16)
        inputs: dict[str, Any] = {}
        for name in sorted(r.inputs):
            array = np.asarray(r.inputs[name])
            values = array.tolist() if array.dtype.kind in "OUS" else None
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(_dumps(values) if values is not None else np.ascontiguousarray(array).tobytes())
            inputs[name] = values if values is not None else array
        encoded = _dumps(inputs)
        outputs = {name: (array if np.size(array) <= self.output_max_values
                          else {"dtype": np.asarray(array).dtype.str, "shape": list(np.shape(array))})
                   for name, array in r.outputs.items()}
        first = next(iter(r.variants.values()), None)
        return (r.request_id, r.time, r.pipeline, first, _dumps(dict(r.variants)).decode(), digest.hexdigest(),
                encoded.decode() if len(encoded) <= self.inputs_max_bytes else None, _dumps(outputs).decode(),
                r.latency_ms)

    def _apply_retention(self, db: sqlite3.Connection) -> None:
        try:
            with _transaction(db):
                if self.max_age_s is not None:
                    db.execute("DELETE FROM predictions WHERE time < ?", (time.time() - self.max_age_s,))
                if self.max_rows is not None:
                    # NOTE: seq only grows and rows only leave from the oldest end, so the newest max_rows are
                    # those above max(seq) - max_rows: one look at the end of the index, where an OFFSET
                    # walked a million entries (0.15 s of CPU every retention_interval_s).
                    db.execute("DELETE FROM predictions WHERE seq <= (SELECT max(seq) FROM predictions) - ?",
                               (self.max_rows,))
                db.execute("DELETE FROM labels WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE "
                           "p.pipeline = labels.pipeline AND p.request_id = labels.request_id)")
        except sqlite3.Error:
            logger.exception("could not apply the retention bounds to %s", self.path)

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
        self._closed = True
        self._wake.set()
        self._thread.join(timeout_s)

    def stats(self) -> dict[str, Any]:
        """Where the log is, and how many records were queued, written, failed, dropped and are waiting."""
        return {"path": str(self.path), "accepted": self._accepted, "written": self._written, "failed": self._failed,
                "dropped": self._dropped, "queued": max(self._accepted - self._written - self._failed, 0),
                "max_rows": self.max_rows, "max_age_s": self.max_age_s, "closed": self._closed}

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own, for one thread, closed at the end of the block."""
        with closing(self._connect()) as db:
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
                f"SELECT {', '.join('p.' + c for c in _COLUMNS)}, l.label FROM predictions p LEFT JOIN labels l "
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
        with self.reading() as db, _transaction(db):
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


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot log a value of type {type(value).__name__}")


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)
