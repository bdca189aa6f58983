"""Processes the tests start: a Dask cluster of separate processes, and finding what a test left behind.

Processes are found by a marker in their environment (so none is left behind).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from waiting import eventually, free_port

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


@dataclass
class DaskProcesses:
    """A scheduler and workers started as separate processes (``dask scheduler``, ``dask worker``), and their logs."""

    folder: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def scheduler_file(self) -> Path:
        return self.folder / "scheduler.json"

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.folder / f"{name}.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log, stderr=subprocess.STDOUT,
                                       cwd=self.folder, env={**os.environ, "WORKBENCH_INTRA_OP_THREADS": "1"})
        self.processes[name] = process
        return process

    def start_scheduler(self, port: int = 0) -> str:
        """Start the scheduler (on ``port``, or any free one) and return its address once it listens."""
        self.scheduler_file.unlink(missing_ok=True)
        process = self.start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(self.scheduler_file))

        def written() -> bool:
            assert process.poll() is None, self.log("scheduler")
            try:
                return "address" in json.loads(self.scheduler_file.read_text())
            except (OSError, ValueError):  # NOTE: not there yet, or half written
                return False

        eventually(written, what="the scheduler's address in its file")
        address: str = json.loads(self.scheduler_file.read_text())["address"]
        return address

    def start_worker(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(name, "worker", "--scheduler-file", str(self.scheduler_file), "--name", name, "--nthreads",
                          "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", *args)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_all(self.processes.values())


def start_serving(folder: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start ``workbench serve ARGS`` on a free port, as a user does; the process and its URL once it serves.

    Its log goes to ``folder/serve.log``; the caller stops the process.
    """
    port = free_port()
    with open(folder / "serve.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "workbench.cli", "serve", *args, "--port", str(port)],
                                   stdout=subprocess.PIPE, stderr=log, text=True, cwd=folder,
                                   env={**os.environ, "WORKBENCH_INTRA_OP_THREADS": "1", **(env or {})})
    assert process.stdout is not None
    line = process.stdout.readline()  # NOTE: one line once serving (or nothing, if it stopped)
    if "serving" not in line:
        process.kill()
        raise AssertionError(f"workbench serve did not start: {line!r}\n{(folder / 'serve.log').read_text()}")
    return process, f"http://127.0.0.1:{port}"
