"""Finding the processes a test started, by a marker in their environment (so none is left behind)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

#: Environment variable that tests set, with a value of their own, on every process they start.
MARKER = "WORKBENCH_TEST_RUN"


def processes_marked(marker: str) -> list[str]:
    """Command lines of the live processes whose environment holds ``MARKER=marker``."""
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def stop_all(processes: Iterable[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> None:
    """Terminate processes a test started, then kill those that do not stop within ``timeout_s``."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
