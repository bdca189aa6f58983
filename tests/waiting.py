"""Waiting in tests: for what a server or cluster does in its own time, and for a free port to give it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout_s: float = 60.0, what: str = "the condition",
               interval_s: float = 0.1) -> T:
    """Poll ``check`` until it returns something true, and return that; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s:g} s")
        time.sleep(interval_s)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
