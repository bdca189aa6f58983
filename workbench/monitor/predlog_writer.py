"""The prediction log's writer: a process of its own that encodes the rows and inserts them in SQLite.

The serving process only frames each answered batch (its merged arrays as raw bytes, strings as one
JSON list, ids and latencies) and writes the frame to this process's stdin: the per-row work (a
digest, the JSON of each row's inputs and outputs, binding the values) holds this process's GIL,
not the one the event loop needs. Measured beside tabular at 32 connections: 36 µs of the serving
process's GIL a request, in a thread, before.

Run as ``python -P predlog_writer.py DB_PATH OPTIONS_JSON`` by
:class:`~workbench.monitor.predlog.PredictionLog`; imports nothing of the workbench, so that it
starts in a fraction of a second and stays small. Per frame read it answers one line on stdout,
``"<written> <failed>"``; at the end of its input it applies the retention bounds once more and
exits. It ignores SIGINT (a Ctrl-C reaches the whole foreground group): the serving process drains
it when it stops, and a serving process that dies closes its stdin.

A frame: two little-endian u32 (header length, data length), a JSON header, then the data. The
header lists items, one per answered batch (or single record)::

    {"t": unix time | [unix time, ...], "p": pipeline, "v": {stage: variant}, "ids": [...], "lat": [...],
     "rows": [...], "in": [array, ...] | "in_each": [[array, ...], ...], "out": [array, ...]}

``t`` is a list (one time per request) for an item that joins several one-request batches.
``in`` and ``out`` hold merged arrays that each request's ``rows`` slice; ``in_each`` holds each
request's own inputs (a batch whose requests were padded to one shape). An array is
``[name, dtype, shape, nbytes, how]``: ``how`` 0 raw C-order bytes, 1 a JSON nested list (strings,
objects), 2 no data (every request's slice is over ``output_max_values``: only its dtype and shape
are kept).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import sqlite3
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import numpy as np
import orjson

SCHEMA = """
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
COLUMNS = ("request_id", "time", "pipeline", "variant", "variants", "input_digest", "inputs", "outputs",
           "latency_ms")
_INSERT = f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
PREFIX = struct.Struct("<II")
RAW, JSON, NO_DATA = 0, 1, 2

logger = logging.getLogger("workbench.monitor.predlog_writer")


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    db.execute("PRAGMA busy_timeout=30000")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
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


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)


def apply_retention(db: sqlite3.Connection, max_rows: int | None, max_age_s: float | None) -> None:
    """Delete the rows beyond the bounds, and the labels whose prediction is gone."""
    try:
        with transaction(db):
            if max_age_s is not None:
                db.execute("DELETE FROM predictions WHERE time < ?", (time.time() - max_age_s,))
            if max_rows is not None:
                # NOTE: seq only grows and rows only leave from the oldest end, so the newest max_rows are
                # those above max(seq) - max_rows: one look at the end of the index, where an OFFSET
                # walked a million entries (0.15 s of CPU every retention interval).
                db.execute("DELETE FROM predictions WHERE seq <= (SELECT max(seq) FROM predictions) - ?",
                           (max_rows,))
            db.execute("DELETE FROM labels WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE "
                       "p.pipeline = labels.pipeline AND p.request_id = labels.request_id)")
    except sqlite3.Error:
        logger.exception("could not apply the retention bounds")


class _Column:
    """One decoded array of an item, sliced by request rows."""

    __slots__ = ("dtype", "how", "inner", "name", "values")

    def __init__(self, desc: list[Any], data: memoryview, offset: int) -> None:
        self.name, self.dtype, shape, nbytes, self.how = desc
        self.inner = tuple(shape[1:])
        chunk = data[offset:offset + nbytes]
        if self.how == RAW:
            self.values: Any = np.frombuffer(chunk, dtype=self.dtype).reshape(shape)
        elif self.how == JSON:
            self.values = orjson.loads(chunk)
        else:
            self.values = None

    def rows(self, start: int, count: int) -> Any:
        return None if self.values is None else self.values[start:start + count]

    def shape(self, count: int) -> tuple[int, ...]:
        return (count, *self.inner)


def _columns(descs: list[list[Any]], data: memoryview, offset: int) -> tuple[list[_Column], int]:
    columns = []
    for desc in descs:
        columns.append(_Column(desc, data, offset))
        offset += desc[3]
    return columns, offset


class RowEncoder:
    """The rows of the ``predictions`` table, from decoded frames."""

    def __init__(self, inputs_max_bytes: int, output_max_values: int) -> None:
        self.inputs_max_bytes, self.output_max_values = inputs_max_bytes, output_max_values

    def frame_rows(self, header: list[dict[str, Any]], data: memoryview) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        offset = 0
        for item in header:
            if "in_each" in item:
                each = []
                for descs in item["in_each"]:
                    columns, offset = _columns(descs, data, offset)
                    each.append(columns)
            else:
                merged, offset = _columns(item["in"], data, offset)
            outputs, offset = _columns(item["out"], data, offset)
            variants = item["v"]
            first = next(iter(variants.values()), None)
            variants_json = dumps(variants).decode()
            start = 0
            times = item["t"] if isinstance(item["t"], list) else [item["t"]] * len(item["ids"])
            for i, (request_id, latency, count) in enumerate(zip(item["ids"], item["lat"], item["rows"])):
                own = (each[i], 0) if "in_each" in item else (merged, start)
                digest, inputs = self._inputs(*own, count)
                rows.append((request_id, times[i], item["p"], first, variants_json, digest, inputs,
                             self._outputs(outputs, start, count), latency))
                start += count
        return rows

    def _inputs(self, columns: list[_Column], start: int, count: int) -> tuple[str, str | None]:
        digest = hashlib.blake2b(digest_size=16)
        inputs: dict[str, Any] = {}
        for column in sorted(columns, key=lambda c: c.name):
            values = column.rows(start, count)
            shape = column.shape(count) if column.how == JSON else values.shape
            digest.update(f"{column.name}|{column.dtype}|{shape}|".encode())
            digest.update(dumps(values) if column.how == JSON else np.ascontiguousarray(values).tobytes())
            inputs[column.name] = values
        encoded = dumps(inputs)
        return digest.hexdigest(), encoded.decode() if len(encoded) <= self.inputs_max_bytes else None

    def _outputs(self, columns: list[_Column], start: int, count: int) -> str:
        outputs: dict[str, Any] = {}
        for column in columns:
            shape = column.shape(count)
            if column.how == NO_DATA or math.prod(shape) > self.output_max_values:
                outputs[column.name] = {"dtype": column.dtype, "shape": list(shape)}
            else:
                outputs[column.name] = column.rows(start, count)
        return dumps(outputs).decode()


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def serve(path: str, options: dict[str, Any], stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Write every frame read from ``stdin`` until its end; one acknowledgement line per frame."""
    encoder = RowEncoder(options["inputs_max_bytes"], options["output_max_values"])
    max_rows, max_age_s = options.get("max_rows"), options.get("max_age_s")
    interval_s, batch_rows = options["retention_interval_s"], max(1, options["batch_rows"])
    db = connect(path)
    try:
        apply_retention(db, max_rows, max_age_s)
        next_retention = time.monotonic() + interval_s
        while (prefix := _read_exactly(stdin, PREFIX.size)) is not None:
            head_size, data_size = PREFIX.unpack(prefix)
            head, data = _read_exactly(stdin, head_size), _read_exactly(stdin, data_size)
            if head is None or data is None:
                break
            header = orjson.loads(head)
            written = failed = 0
            try:
                rows = encoder.frame_rows(header, memoryview(data))
                for start in range(0, len(rows), batch_rows):
                    with transaction(db):
                        db.executemany(_INSERT, rows[start:start + batch_rows])
                written = len(rows)
            except Exception:  # NOTE: one bad frame must not stop the writer; it is counted and logged
                failed = sum(len(item["ids"]) for item in header)
                logger.exception("could not log %d predictions to %s", failed, path)
            stdout.write(b"%d %d\n" % (written, failed))
            stdout.flush()
            if time.monotonic() >= next_retention:
                apply_retention(db, max_rows, max_age_s)
                next_retention = time.monotonic() + interval_s
        apply_retention(db, max_rows, max_age_s)
    finally:
        db.close()


def main(argv: list[str]) -> None:
    path, options = argv[0], json.loads(argv[1])
    logging.basicConfig(level=logging.WARNING, format="prediction log writer: %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(int(options.get("nice", 0)))
    serve(path, options, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main(sys.argv[1:])
