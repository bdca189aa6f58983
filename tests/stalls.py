"""A stage that holds its batch until a test lets it go: importable by Dask workers (they get the tests' path)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np


def hold(gate: np.ndarray) -> np.ndarray:
    """For each gate path of the batch: mark it started (with the thread's name), then wait until it is removed."""
    paths = [Path(str(item)) for item in gate]
    for path in paths:
        path.with_suffix(".started").write_text(threading.current_thread().name)
    deadline = time.monotonic() + 60
    while any(p.exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.01)
    return np.ones(len(paths), dtype=np.float32)
