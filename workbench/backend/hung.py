"""Silent workers: when a call has waited too long, and how a cordoned worker earns its way back.

A worker that stops answering (SIGSTOP, a native call that never returns, a
swapping machine) is not gone: its connection stays open and the scheduler
keeps listing it for minutes. So a call to a worker has a deadline derived
from what calls of the same runner have measured: ``factor`` times the p99 of
their recent round trips, and never less than ``floor_s`` (before
``min_samples`` calls have come back: ``first_s``). A call past it is sent to
another worker (inference is idempotent, and a late answer is dropped), and
the silent worker is cordoned: it takes no batch of any deployment until it
answers a heartbeat sent through the same lanes the batch waited for, so a
worker whose event loop turns but whose lane is stuck stays out too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from workbench.config import WorkbenchSettings

__all__ = ["CallTimes", "HangRule", "heartbeat"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HangRule:
    """When a call to a worker counts as hung (see the module docstring); :meth:`from_settings` reads
    ``WORKBENCH_HANG_FACTOR``, ``WORKBENCH_HANG_FLOOR_S`` and ``WORKBENCH_HANG_FIRST_S``."""

    factor: float = 10.0
    floor_s: float = 2.0
    first_s: float = 30.0
    min_samples: int = 8
    #: Between two heartbeats to a cordoned worker, and how long one may take.
    heartbeat_s: float = 0.5
    heartbeat_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("factor", "floor_s", "first_s", "heartbeat_s", "heartbeat_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"{name} must be a number > 0, not {value!r}")

    @classmethod
    def from_settings(cls) -> HangRule:
        settings = WorkbenchSettings()
        return cls(factor=settings.hang_factor, floor_s=settings.hang_floor_s, first_s=settings.hang_first_s)


class CallTimes:
    """The recent round trips of one runner's calls, and the deadline they give the next one.

    Examples
    --------
    >>> times = CallTimes(HangRule(min_samples=2))
    >>> times.deadline_s()
    30.0
    >>> times.add(0.5); times.add(0.3)
    >>> round(times.deadline_s(), 2)
    4.98
    """

    #: Round trips kept; the deadline is recomputed every ``_EVERY`` of them (a percentile is not free).
    _KEPT, _EVERY = 256, 16

    def __init__(self, rule: HangRule) -> None:
        self.rule = rule
        self._seconds: deque[float] = deque(maxlen=self._KEPT)
        self._deadline_s = rule.first_s
        self._since = 0

    def add(self, seconds: float) -> None:
        self._seconds.append(seconds)
        self._since += 1
        if len(self._seconds) == self.rule.min_samples or self._since >= self._EVERY:
            self._since = 0
            if len(self._seconds) >= self.rule.min_samples:
                p99 = float(np.percentile(np.fromiter(self._seconds, float, len(self._seconds)), 99))
                self._deadline_s = max(self.rule.factor * p99, self.rule.floor_s)

    def deadline_s(self) -> float:
        return self._deadline_s


async def heartbeat(ping: Callable[[], Awaitable[object]], rule: HangRule, *, gone: Callable[[], bool]) -> bool:
    """Ping until an answer comes within ``rule.heartbeat_timeout_s``: True then; False once ``gone()`` says so.

    A ping that fails with ``OSError`` (the worker died) ends it too: the pool forgets dead workers itself.
    """
    while not gone():
        began = time.monotonic()
        try:
            await asyncio.wait_for(ping(), rule.heartbeat_timeout_s)
            return True
        except TimeoutError:
            pass
        except OSError:
            return False
        except Exception:  # NOTE: an odd answer is no heartbeat: keep it cordoned, and say why once in a while
            logger.debug("heartbeat failed", exc_info=True)
        await asyncio.sleep(max(rule.heartbeat_s - (time.monotonic() - began), 0.0))
    return False
