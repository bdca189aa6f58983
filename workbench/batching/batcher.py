"""The dynamic batcher: concurrent requests in, batches out, live knobs.

One batcher per deployed pipeline. Requests queue up; a loop forms batches of
at most ``max_batch_size`` rows and hands them to ``run_batch`` (in-process, or
on a Dask worker), at most ``max_in_flight`` at a time. Results are split back
to each request with its own timings.

When to dispatch: a batch goes at once when no other request is expected
before its deadline (``max_delay_ms`` after its first request), judged from the
recent gap between arrivals, or when the free slots serve requests faster than
they arrive (the recent batch run time is shorter than the gap times the free
slots): waiting for company then only adds latency. Otherwise it waits at most
two usual gaps for the next request. So a lone request never waits for company
that is not coming, while under load batches fill up, and while every slot is
busy requests simply accumulate (waiting then costs nothing).

Slots may outnumber the batches that really run at once (``runners``: the Dask
backend sends two batches per worker thread, so that a worker never idles while
an answer travels). When every runner has a batch, a new one would wait at a
worker anyway: it keeps gathering for half a batch run, past ``max_delay_ms`` if
need be (never past halfway to a request's own deadline), instead of leaving
with whoever is queued. And a batch takes at most an
equal share of the rows in the system (queued and in flight) per runner, so that
the runners share a burst instead of one taking it all (``even_shares``).

Admission: a request is refused at once with :class:`Overloaded` (HTTP 429)
when ``max_queue`` requests already wait, and, once a latency target is set
(:meth:`DynamicBatcher.set_latency_target`), when the work queued ahead of it
cannot be answered within the target at the recently measured service rate::

    slow     = batch run time + 2 * its mean deviation           (both smoothed over recent batches)
    rate     = max_in_flight * rows per batch / slow
    ahead    = rows queued + half the rows of the batches in flight
    estimate = ahead / rate + slow                                (the wait, then its own batch)

Nothing is refused while the rows queued and in flight fit in two rounds of
batches (``2 * max_batch_size * max_in_flight`` rows: the round running and the
next), nor before any batch has been measured: those requests go with the next
batches anyway, and a cold start has no rate to judge by. The engine times one
full batch at deploy (:meth:`DynamicBatcher.seed_service`), so that a burst on a
fresh deployment is judged too.

Deadlines: a request that is not dispatched by its deadline fails with
:class:`DeadlineExceeded` (HTTP 504) as the deadline passes, and is never run;
neither is a request whose caller stopped waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.batching.batch import AnsweredBatch, merge, split
from workbench.config import BatchingConfig
from workbench.errors import BackendUnavailable, WorkbenchError
from workbench.monitor.stats import BatcherStats
from workbench.pipeline.graph import Prediction

__all__ = ["BatcherClosed", "DeadlineExceeded", "DynamicBatcher", "Overloaded"]

RunBatch = Callable[[dict[str, np.ndarray]], Awaitable[Prediction]]

logger = logging.getLogger(__name__)

#: Weight of the newest gap in the running estimate of the time between arrivals.
_GAP_SMOOTHING = 0.2
#: How many usual gaps the batcher waits for one more request before it dispatches.
_PATIENCE = 2.0
#: Weight of the newest batch in the running mean deviation of the batch run time.
_DEVIATION_SMOOTHING = 0.25
#: Mean deviations added to the mean batch run time for admission: a high quantile of a noisy time
#: from two running sums, as TCP's retransmission timer does for round trips (RFC 6298 adds 4).
_SPREAD = 2.0
#: The longest deadline a request may set; one past it (a year) is no deadline at all.
_LONGEST_DEADLINE_S = 365 * 86400.0


def _halfway(now_ns: int, deadline_ns: int) -> int:
    return now_ns + (deadline_ns - now_ns) // 2


class Overloaded(WorkbenchError):
    """The pipeline's queue is full, or too long to meet its latency target: refused at once (HTTP 429).

    ``retry_after_s`` is how long the queue takes to drain enough, by the recent service rate.
    """

    status_code = 429

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(WorkbenchError):
    """The request's deadline passed before it could run; it was not run."""

    status_code = 504


def _may_be_one_request(exc: Exception) -> bool:
    """Whether a batch's failure could come from one of its requests (not from the backend as a whole)."""
    if isinstance(exc, BackendUnavailable | BatcherClosed):
        return False
    return not (isinstance(exc, WorkbenchError) and exc.status_code in (503, 504))


class BatcherClosed(WorkbenchError):
    """The batcher was closed before the request ran."""

    status_code = 503


@dataclass(slots=True)
class _Pending:
    tensors: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future[Prediction]
    enqueued_ns: int
    deadline_ns: int | None = None
    request_id: str = ""
    pulled_ns: int = 0
    dispatched: bool = False
    expired: bool = False


class DynamicBatcher:
    """Collect concurrent requests into batches bounded by the live knobs.

    Parameters
    ----------
    name
        The pipeline's name (for messages).
    run_batch
        Coroutine function running one merged batch and returning its :class:`Prediction`.
    config
        The initial knobs; change them any time with :meth:`set_batching`.
    pad_values
        Pad value per input tensor for ragged dimensions (default 0).
    even_shares
        Bound each batch by an equal share of the rows in the system per runner (see the
        module docstring); ``False`` lets the first free slot take up to ``max_batch_size``.

    Examples
    --------
    >>> batcher = DynamicBatcher("text", run_batch, BatchingConfig(max_batch_size=16))  # doctest: +SKIP
    >>> prediction = await batcher.submit({"text": np.array(["hello"], dtype=object)})   # doctest: +SKIP
    """

    def __init__(self, name: str, run_batch: RunBatch, config: BatchingConfig | None = None, *,
                 pad_values: Mapping[str, Any] | None = None, stats: BatcherStats | None = None,
                 even_shares: bool = True) -> None:
        self.name = name
        self.even_shares = even_shares
        self._run_batch = run_batch
        self._config = config or BatchingConfig()
        self._pad_values = dict(pad_values or {})
        self.stats = stats or BatcherStats()
        # NOTE: asyncio objects are created on first use, inside the running loop.
        self._queue: asyncio.Queue[_Pending] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._slot_freed: asyncio.Event | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._carry: _Pending | None = None
        self._forming: list[_Pending] = []
        self._gap_ns = float("inf")
        self._service_ns = 0.0
        self._service_dev_ns = 0.0
        self._batch_rows = 0.0
        # NOTE: rows admitted and not yet dispatched (queued, carried, or held while a batch forms), and
        # rows of the batches in flight: running counts, so that admission costs O(1) per request.
        self._waiting_rows = 0
        self._in_flight_rows = 0
        self._latency_target_s: float | None = None
        self.refused_for_latency = 0
        self._last_arrival_ns = 0
        self._closed = False
        self.isolated_batches = 0
        #: How many batches run at once (the workers' threads); ``max_in_flight`` may hold more, which then
        #: wait at the workers. ``None``: as many as ``max_in_flight``.
        self.runners: int | None = None
        #: Hears of every answered batch, once, right after its requests got their answers (the prediction
        #: log, drift and the observers are fed per batch, not per request). Its errors are logged, not raised.
        self.on_batch: Callable[[AnsweredBatch], None] | None = None

    # -- knobs -------------------------------------------------------------------------
    @property
    def config(self) -> BatchingConfig:
        return self._config

    def set_batching(self, **changes: Any) -> BatchingConfig:
        """Change knobs (``max_batch_size``, ``max_delay_ms``, ``mode``, ``max_in_flight``).

        Checked at once; they apply from the next batch formed.
        """
        self._config = self._config.updated(**changes)
        return self._config

    @property
    def latency_target_ms(self) -> float | None:
        return None if self._latency_target_s is None else self._latency_target_s * 1e3

    def set_latency_target(self, target_ms: float | None) -> None:
        """Refuse requests that the queue ahead of them would keep past ``target_ms``; ``None`` stops that.

        See the module docstring for the estimate. Applies from the next request.
        """
        if target_ms is not None and not (isinstance(target_ms, int | float) and target_ms > 0):
            raise ValueError("the latency target must be a number of milliseconds > 0, or None")
        self._latency_target_s = None if target_ms is None else float(target_ms) / 1e3

    def estimated_latency_s(self) -> float | None:
        """How long a request arriving now would take, by the recent service rate; ``None`` before any batch ran."""
        if not self._service_ns or not self._batch_rows:
            return None
        # NOTE: a slow batch, not a typical one: a target is a high percentile, and a shared machine is noisy.
        service_s = (self._service_ns + _SPREAD * self._service_dev_ns) / 1e9
        rows_per_s = max(self._config.max_in_flight, 1) * self._batch_rows / service_s
        # NOTE: a batch in flight is half done on average: its other half is still ahead of the queue.
        ahead = self._waiting_rows + self._in_flight_rows / 2
        return ahead / rows_per_s + service_s

    def seed_service(self, seconds: float, rows: int) -> None:
        """Take a batch timed outside the batcher (the engine's warm-up at deploy) as the first one measured.

        Without it, admission has no rate to judge a cold start's burst by. Ignored once a batch ran here.
        """
        if not self._service_ns and seconds > 0 and rows > 0:
            self._learn(seconds * 1e9, rows)

    def _learn(self, ran_ns: float, rows: int) -> None:
        """Fold one batch's run time into the smoothed service time, its deviation and the rows per batch."""
        # NOTE: as RFC 6298 does for round trips: the deviation starts at half the first sample, and is
        # updated from the old mean before the mean moves.
        self._service_dev_ns = ran_ns / 2 if not self._service_ns else (
            _DEVIATION_SMOOTHING * abs(ran_ns - self._service_ns) + (1 - _DEVIATION_SMOOTHING) * self._service_dev_ns)
        self._service_ns = ran_ns if not self._service_ns else (
            _GAP_SMOOTHING * ran_ns + (1 - _GAP_SMOOTHING) * self._service_ns)
        self._batch_rows = rows if not self._batch_rows else (
            _GAP_SMOOTHING * rows + (1 - _GAP_SMOOTHING) * self._batch_rows)

    def replace_runner(self, run_batch: RunBatch) -> None:
        """Send batches formed from now on to ``run_batch`` (a swap); batches in flight finish where they are."""
        self._run_batch = run_batch

    @property
    def queue_depth(self) -> int:
        """Requests waiting to be batched."""
        waiting = self._queue.qsize() if self._queue is not None else 0
        return waiting + (1 if self._carry is not None else 0)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- requests ----------------------------------------------------------------------
    async def submit(self, tensors: dict[str, np.ndarray], *, timeout_s: float | None = None,
                     request_id: str = "") -> Prediction:
        """Queue one request (already validated tensors) and await its share of a batch.

        ``request_id`` comes back as the answer's ``request_id`` (and in :attr:`on_batch`).

        Raises :class:`Overloaded` at once when ``max_queue`` requests already wait,
        and :class:`DeadlineExceeded` when ``timeout_s`` passes before the request
        is dispatched (it is then not run at all).
        """
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"the request timeout must be a number of seconds > 0, not {timeout_s!r}")
        if self._closed:
            raise BatcherClosed(f"pipeline {self.name!r} is shutting down")
        self._ensure_started()
        assert self._queue is not None
        if self.queue_depth >= self._config.max_queue:
            self.stats.record_rejection()
            raise Overloaded(f"pipeline {self.name!r} has {self.queue_depth} requests waiting (max_queue "
                             f"{self._config.max_queue}); retry shortly", retry_after_s=self._retry_after_s())
        if self._latency_target_s is not None:
            self._admit(self._latency_target_s)
        now = time.perf_counter_ns()
        if self._last_arrival_ns:
            gap = now - self._last_arrival_ns
            self._gap_ns = gap if self._gap_ns == float("inf") else (
                _GAP_SMOOTHING * gap + (1 - _GAP_SMOOTHING) * self._gap_ns)
        self._last_arrival_ns = now
        rows = next(iter(tensors.values())).shape[0]
        if timeout_s is not None and timeout_s > _LONGEST_DEADLINE_S:
            timeout_s = None  # NOTE: a deadline past this is none (and infinity has no integer nanoseconds)
        deadline_ns = now + int(timeout_s * 1e9) if timeout_s is not None else None
        pending = _Pending(tensors, rows, asyncio.get_running_loop().create_future(), now, deadline_ns, request_id)
        self._queue.put_nowait(pending)
        self._waiting_rows += rows
        if deadline_ns is None:
            return await pending.future
        # NOTE: the caller hears at its deadline, not once the batcher reaches the request: the queue ahead
        # may take far longer. The request stays queued, and is dropped when the batcher pulls it.
        timer = asyncio.get_running_loop().call_later((deadline_ns - now) / 1e9, self._expire, pending, deadline_ns)
        try:
            return await pending.future
        finally:
            timer.cancel()

    def _admit(self, target_s: float) -> None:
        """Refuse a request (:class:`Overloaded`) that the work queued ahead would keep past the latency target."""
        config = self._config
        if self._waiting_rows + self._in_flight_rows < 2 * config.max_batch_size * config.max_in_flight:
            # NOTE: the floor: the slots take these rows in the round they are running or the next, whatever
            # the estimate says; refusing them would cost throughput and make no one faster.
            return
        estimate_s = self.estimated_latency_s()
        if estimate_s is None or estimate_s <= target_s:
            return
        self.refused_for_latency += 1
        self.stats.record_rejection()
        raise Overloaded(
            f"pipeline {self.name!r} is over its latency target: {self.queue_depth} requests "
            f"({self._waiting_rows} rows) are queued ahead, an estimated wait of {estimate_s * 1e3:.0f} ms "
            f"against a target of {target_s * 1e3:g} ms; retry shortly", retry_after_s=estimate_s - target_s)

    def _retry_after_s(self) -> float:
        """How long the queue now in front of a new request takes to drain, by the recent batch run time."""
        per_batch_s = max(self._service_ns / 1e9, 1e-3)
        batches = self.queue_depth / max(self._config.max_batch_size, 1) / max(self._config.max_in_flight, 1)
        return max(per_batch_s * batches, 0.001)

    def _expire(self, pending: _Pending, now_ns: int) -> bool:
        """Drop a request that is not to run: its deadline passed before it was dispatched, or its caller
        gave up waiting (cancelled). True when it is dropped (now or before)."""
        if pending.expired:
            return True
        if pending.dispatched:
            return False
        if pending.future.cancelled():
            # NOTE: nobody waits for its answer any more: running its rows would only delay the others.
            pending.expired = True
            self._waiting_rows -= pending.rows
            return True
        if pending.deadline_ns is None or now_ns < pending.deadline_ns:
            return False
        pending.expired = True
        self._waiting_rows -= pending.rows
        self.stats.record_expiry()
        if not pending.future.done():
            waited_ms = (now_ns - pending.enqueued_ns) / 1e6
            pending.future.set_exception(DeadlineExceeded(
                f"pipeline {self.name!r}: the request's deadline passed after {waited_ms:.1f} ms in the queue; "
                "it was not run"))
        return True

    def _ensure_started(self) -> None:
        if self._loop_task is None:
            self._queue = asyncio.Queue()
            self._slot_freed = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Finish the batches in flight, then fail what is still queued with :class:`BatcherClosed`."""
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        leftovers = [*self._forming, *([self._carry] if self._carry is not None else [])]
        self._forming, self._carry = [], None
        self._waiting_rows = 0
        while self._queue is not None and not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for pending in leftovers:
            pending.expired = True  # NOTE: counted out of the waiting rows already (reset above)
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed(f"pipeline {self.name!r} closed before the request ran"))

    # -- the loop ----------------------------------------------------------------------
    async def _next(self, timeout_s: float | None) -> _Pending | None:
        assert self._queue is not None
        if self._carry is not None:
            pending, self._carry = self._carry, None
            return pending
        if timeout_s is None:
            return await self._queue.get()
        if not self._queue.empty():
            # NOTE: under load the next request is usually queued already: take it without the task and
            # timer of wait_for (a fifth of the engine's CPU time per request at 32 concurrent clients).
            return self._queue.get_nowait()
        if timeout_s <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None

    async def _wait_for_slot(self) -> None:
        assert self._slot_freed is not None
        # NOTE: compare with the current knob each time, so a change of max_in_flight applies at once.
        while len(self._in_flight) >= self._config.max_in_flight:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _loop(self) -> None:
        while True:
            first = await self._next(None)
            assert first is not None
            if self._expire(first, time.perf_counter_ns()):
                continue
            # NOTE: requests taken off the queue are held here until dispatched, so that
            # close() can still answer them if it cancels the loop meanwhile.
            self._forming = [first]
            await self._wait_for_slot()
            # NOTE: read the knobs once per batch; a change applies to the next one.
            config = self._config
            first.pulled_ns = time.perf_counter_ns()
            batch = self._forming
            rows = first.rows
            # NOTE: "auto" forms batches like "dynamic"; only an auto-tuner moving the knobs tells them apart.
            if config.mode != "realtime":
                free_slots = max(config.max_in_flight - len(self._in_flight), 1)
                deadline = first.enqueued_ns + config.max_delay_ms * 1e6
                runners = self._runners(config)
                busy = len(self._in_flight) >= runners and self._service_ns > 0
                if busy:
                    # NOTE: every runner has a batch running (the other slots' batches wait at the workers):
                    # this batch would wait behind them too, so it gathers for half a batch run at no cost,
                    # even past max_delay_ms (never past a request's own deadline), rather than leaving
                    # with whoever happens to be queued.
                    deadline = max(deadline, first.pulled_ns + self._service_ns * runners / config.max_in_flight / 2)
                    if first.deadline_ns is not None:
                        deadline = min(deadline, _halfway(first.pulled_ns, first.deadline_ns))
                while rows < self._limit(config):
                    now = time.perf_counter_ns()
                    remaining_ns = deadline - now
                    expected = self._carry is not None or (self._queue is not None and not self._queue.empty())
                    if not expected and not busy and (
                            self._gap_ns > remaining_ns or self._gap_ns * free_slots >= self._service_ns):
                        # NOTE: nobody is likely to arrive in time, or the free workers keep up with
                        # arrivals one by one: waiting for company would only add latency.
                        break
                    # NOTE: wait about two usual gaps at most: if nobody came by then, traffic has paused.
                    wait_ns = remaining_ns if expected or busy else min(remaining_ns, _PATIENCE * self._gap_ns)
                    pending = await self._next(max(wait_ns, 0) / 1e9)
                    if pending is None:
                        break
                    pending.pulled_ns = time.perf_counter_ns()
                    if self._expire(pending, pending.pulled_ns):
                        continue
                    if rows + pending.rows > self._limit(config):
                        self._carry = pending
                        break
                    batch.append(pending)
                    rows += pending.rows
                    if busy and pending.deadline_ns is not None:
                        # NOTE: gathering must not make a request miss its own deadline: it stops halfway
                        # there, leaving the rest of the time for the dispatch.
                        deadline = min(deadline, _halfway(pending.pulled_ns, pending.deadline_ns))
            self._forming = []
            if first.deadline_ns is not None or len(batch) > 1:
                # NOTE: a request may have expired while waiting for a free slot.
                now = time.perf_counter_ns()
                batch = [p for p in batch if not self._expire(p, now)]
                if not batch:
                    continue
                rows = sum(p.rows for p in batch)
            self._waiting_rows -= rows
            for pending in batch:
                pending.dispatched = True  # NOTE: from here on its deadline no longer applies: it runs
            self._in_flight_rows += rows
            task = asyncio.get_running_loop().create_task(self._dispatch(batch, rows))
            self._in_flight.add(task)
            task.add_done_callback(functools.partial(self._finished, rows))

    def _limit(self, config: BatchingConfig) -> int:
        """Most rows for the batch forming now: ``max_batch_size``, or less with even shares.

        NOTE: one batch taking every queued request leaves the other runners tiny batches, and the clients
        answered together come back together: closed loops lock into a few big batches and many of one
        (text at 32 connections: 671 -> 956 requests/s). Per runner, not per slot: a slot's second batch
        waits at its worker, and smaller batches only cost more round trips (tabular at 32 connections:
        7606 requests/s with shares per slot, 8983 per runner). Counted again as requests arrive: the
        clients of a batch just answered are on their way back.
        """
        if not self.even_shares:
            return config.max_batch_size
        share = -(-(self._waiting_rows + self._in_flight_rows) // self._runners(config))
        return max(1, min(config.max_batch_size, share))

    def _runners(self, config: BatchingConfig) -> int:
        """Batches that run at once: the workers' threads, never more than the slots."""
        return min(self.runners or config.max_in_flight, config.max_in_flight)

    def _finished(self, rows: int, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._in_flight_rows -= rows
        if self._slot_freed is not None:
            self._slot_freed.set()

    async def _dispatch(self, batch: list[_Pending], rows: int) -> None:
        dispatched = time.perf_counter_ns()
        self.stats.record_batch(rows)
        try:
            tensors = merge([p.tensors for p in batch], self._pad_values)
            prediction = await self._run_batch(tensors)
        except Exception as exc:  # the error goes to this batch's requests only; the loop goes on
            self.stats.record_batch_run((time.perf_counter_ns() - dispatched) / 1e9)
            if len(batch) > 1 and _may_be_one_request(exc):
                # NOTE: one request that breaks a stage must not sink its batch-mates: each runs
                # again alone, and only the one at fault gets the error.
                self.isolated_batches += 1
                await asyncio.gather(*(self._dispatch([pending], pending.rows) for pending in batch))
                return
            self.stats.record_error(len(batch), getattr(exc, "status_code", 500))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        done = time.perf_counter_ns()
        ran = done - dispatched
        self.stats.record_batch_run(ran / 1e9)
        if prediction.counters:
            self.stats.record_counts(prediction.counters)
        self._learn(ran, rows)
        shared = prediction.timings_ms
        queued, forming, total = [], [], []
        answers = []
        for pending, outputs in zip(batch, split(prediction.outputs, [p.rows for p in batch])):
            timings = {
                "queue": (pending.pulled_ns - pending.enqueued_ns) / 1e6,
                "batch_formation": (dispatched - pending.pulled_ns) / 1e6,
                **shared,
                "total": (done - pending.enqueued_ns) / 1e6,
            }
            queued.append(timings["queue"])
            forming.append(timings["batch_formation"])
            total.append(timings["total"])
            answer = Prediction(outputs, timings, prediction.variants, request_id=pending.request_id)
            answers.append(answer)
            if not pending.future.done():  # NOTE: a caller that gave up (cancelled) is skipped
                pending.future.set_result(answer)
        # NOTE: recorded for the whole batch at once: its stages' times are the same for every request.
        self.stats.record_requests(shared, {"queue": queued, "batch_formation": forming, "total": total})
        if self.on_batch is not None:
            try:
                self.on_batch(AnsweredBatch(tensors, prediction.outputs, [p.tensors for p in batch], answers,
                                            prediction.variants, ran / 1e6))
            except Exception:  # NOTE: what watches the answers must never take them back
                logger.exception("pipeline %r: recording an answered batch failed", self.name)

    def snapshot(self) -> dict[str, Any]:
        """Statistics plus the current knobs."""
        stats = self.stats.snapshot(self.queue_depth)
        stats["config"] = {"max_batch_size": self._config.max_batch_size, "max_delay_ms": self._config.max_delay_ms,
                           "mode": self._config.mode, "max_in_flight": self._config.max_in_flight}
        stats["in_flight"] = self.in_flight
        stats["isolated_batches"] = self.isolated_batches
        estimate_s = self.estimated_latency_s()
        stats["admission"] = {"latency_target_ms": self.latency_target_ms, "waiting_rows": self._waiting_rows,
                              "estimated_latency_ms": None if estimate_s is None else estimate_s * 1e3,
                              "refused_for_latency": self.refused_for_latency}
        return stats
