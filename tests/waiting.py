"""Time in tests: waiting for what a server or cluster does in its own time, a free port to give it, and a clock
that moves only when told."""

from __future__ import annotations

import asyncio
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


async def until(check: Callable[[], object], timeout_s: float = 60.0, what: str = "the condition",
                interval_s: float = 0.02) -> None:
    """:func:`eventually` for a test on an event loop: poll without blocking the loop the checked work runs on."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s:g} s")
        await asyncio.sleep(interval_s)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ManualClock:
    """A clock that moves only when a test sets ``now``: pass it where code takes ``clock=``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
