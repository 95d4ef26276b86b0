"""Batches run on the threads that prepare their items, for a plain-function handler with no batching delay.

A thread that has prepared an item queues it and, if fewer than ``max_in_flight`` batches are running,
runs a batch of what is queued (its own item and any others) right there, then the next, until nothing is
queued; otherwise the item waits for a running thread to take it. The event loop hands an item to a thread
once and hears back once per batch, so nothing crosses back to the loop between preparing and running,
and no more threads work at once than the executor has. Measured on two cores (BENCHMARKS.md, "Batches on
the preprocessing threads"): against preprocessing in a pool and running batches on their own threads,
ConvNeXt-tiny does 1.12x the images per second with 11 % less CPU per image (two threads alternating
between reading and running, instead of four competing for two cores); the demo model is level.

A lone item (nothing queued or running) is prepared and run in one thread call: one thread hop, which is
most of what a request pays at low load on a host whose idle cores wake slowly.

With ``gather`` > 1, a thread that has a slot first prepares uploads still waiting for a thread, until the
batch has ``gather`` items, and runs them as one batch: on a model whose batches cost less per image
(``service/gather_choice.py`` measures it at load) that is the raw limit's "prepare 4, run 4"; at low
load nothing waits and a lone item still runs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from service.batching.config import Completed
from service.batching.errors import BatcherError, BatcherStoppedError, DeadlineExceededError

T = TypeVar("T")
R = TypeVar("R")

SyncHandler = Callable[[list[T]], Sequence[R | BaseException]]


@dataclass(eq=False)
class _Waiting(Generic[T, R]):
    future: asyncio.Future[Completed[R]]
    deadline: float | None
    value: T | None = None
    prepare_s: float = 0.0
    enqueued_at: float = 0.0
    started: bool = field(default=False)


class PreparingThreads(Generic[T, R]):
    """The prepare-and-run path of one :class:`~service.batching.Batcher`. Counts and hooks are the
    batcher's: ``on_batch(size, run_s)`` runs on the event loop after every batch."""

    def __init__(self, handler: SyncHandler[T, R], executor: Executor, *, name: str, max_batch_size: int,
                 max_in_flight: int, clock: Callable[[], float], on_batch: Callable[[int, float], None],
                 gather: int = 1) -> None:
        self._handler = handler
        self._executor = executor
        self._name = name
        self._max_batch_size = max_batch_size
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._on_batch = on_batch
        self._lock = threading.Lock()  # guards _queue and _running
        self._queue: deque[_Waiting[T, R]] = deque()
        self._running = 0
        self._waiting: set[_Waiting[T, R]] = set()  # every submitted item not yet answered (event loop only)
        self._gather = gather
        # Submitted and not yet taken by a thread, oldest first: each executor job prepares the oldest, which
        # a gathering thread may already have taken.
        self._unprepared: deque[tuple[_Waiting[T, R], Callable[[], T]]] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        """Items queued for a batch; a cancelled or expired one stays in the queue until a thread drops it,
        and does not count."""
        # A copy in one C call (threads change the queue), without the lock the threads wait on.
        return sum(1 for item in tuple(self._queue) if not item.future.done())

    async def submit(self, prepare: Callable[[], T], deadline: float | None) -> Completed[R]:
        """Prepare and run one item; ``deadline`` (on the clock) bounds the time until its batch starts."""
        loop = asyncio.get_running_loop()
        item: _Waiting[T, R] = _Waiting(loop.create_future(), deadline)
        timer = None if deadline is None else loop.call_later(max(0.0, deadline - self._clock()), self._expire, item)
        self._waiting.add(item)
        try:
            try:
                self._unprepared.append((item, prepare))
                self._executor.submit(self._work, loop)
            except RuntimeError:  # the executor was shut down
                raise BatcherStoppedError(f"{self._name}: stopped before this request ran") from None
            # A cancelled caller (client gone) cancels the future too; no batch takes it after that.
            return await item.future
        finally:
            self._waiting.discard(item)
            if timer is not None:
                timer.cancel()
            if not item.future.done():
                item.future.cancel()

    def fail_waiting(self) -> None:
        """Answer every item still waiting (the batcher stopped, its drain time spent); on the event loop."""
        for item in list(self._waiting):
            when = "while" if item.started else "before"
            fail(item, BatcherStoppedError(f"{self._name}: stopped {when} this request ran"))

    # -- on the executor's threads ---------------------------------------------------------------

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """One executor job per submitted item: prepare the oldest unprepared item, then, if a slot is free,
        gather and run batches until nothing is queued."""
        if not self._prepare_next(loop):
            return  # a gathering thread took it
        with self._lock:
            if self._running >= self._max_in_flight or not self._queue:
                return  # a running thread takes it when its batch is done
            self._running += 1
        try:
            # At most gather - 1 more uploads taken, whatever they come to: uploads that fail to read (or a
            # second slot emptying the queue) must not keep the queued items waiting on more reading.
            for _ in range(self._gather - 1):
                if len(self._queue) >= self._gather or not self._prepare_next(loop):
                    break
            while batch := self._take_batch():
                self._run(batch, loop)
        except BaseException:
            with self._lock:
                self._running -= 1
            raise

    def _prepare_next(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Prepare the oldest submitted item no thread has taken, and queue it; False when there is none."""
        try:
            item, prepare = self._unprepared.popleft()
        except IndexError:
            return False
        if item.future.done():  # cancelled or expired while it waited for a thread
            return True
        started = self._clock()
        try:
            item.value = prepare()
        except BaseException as error:  # any error: its caller waits on this item, and only a thread answers
            _call_on(loop, fail, item, error)
            return True
        item.enqueued_at = self._clock()
        item.prepare_s = item.enqueued_at - started
        with self._lock:
            self._queue.append(item)
        return True

    def _take_batch(self) -> list[_Waiting[T, R]]:
        """The next batch; none when nothing is queued, and then the caller's slot is given back (under the
        same lock, so an item queued meanwhile is never left without a thread)."""
        now = self._clock()
        batch: list[_Waiting[T, R]] = []
        with self._lock:
            while self._queue and len(batch) < self._max_batch_size:
                item = self._queue.popleft()
                if item.future.done() or (item.deadline is not None and now >= item.deadline):
                    continue  # cancelled, or expiring this instant: never started late
                item.started = True
                batch.append(item)
            if not batch:
                self._running -= 1
        return batch

    def _run(self, batch: list[_Waiting[T, R]], loop: asyncio.AbstractEventLoop) -> None:
        started = self._clock()
        results: Sequence[R | BaseException]
        try:
            results = self._handler([item.value for item in batch])  # type: ignore[misc]
            if len(results) != len(batch):
                raise BatcherError(f"{self._name}: handler returned {len(results)} results for {len(batch)} inputs")
        except BaseException as error:  # a failing batch fails only its own items; this thread runs on
            results = [error] * len(batch)
        _call_on(loop, self._deliver, batch, results, started, self._clock() - started)

    # -- on the event loop -----------------------------------------------------------------------

    def _deliver(self, batch: list[_Waiting[T, R]], results: Sequence[R | BaseException], started: float,
                 run_s: float) -> None:
        self._on_batch(len(batch), run_s)
        settle(batch, results, started, run_s)

    def _expire(self, item: _Waiting[T, R]) -> None:
        # Under the lock a batch takes items with: either it started (and is answered by its batch) or it is
        # failed here and no batch takes it, never both.
        with self._lock:
            if not item.started and not item.future.done():
                item.future.set_exception(
                    DeadlineExceededError(f"{self._name}: request did not start within its deadline"))


class Batched(Protocol[R]):
    """An item of a batch, as both of the batcher's paths keep it."""

    @property
    def future(self) -> asyncio.Future[Completed[R]]: ...
    @property
    def prepare_s(self) -> float: ...
    @property
    def enqueued_at(self) -> float: ...


def settle(batch: Sequence[Batched[R]], results: Sequence[R | BaseException], started: float, run_s: float) -> None:
    """Answer each caller still waiting with its result (or its own error), on the event loop."""
    for item, result in zip(batch, results, strict=True):
        if item.future.done():
            continue
        if isinstance(result, BaseException):
            item.future.set_exception(result)
        else:
            item.future.set_result(Completed(result, item.prepare_s, started - item.enqueued_at, run_s, len(batch)))


def fail(item: Batched[R], error: BaseException) -> None:
    """Answer a caller still waiting with ``error``, on the event loop."""
    if not item.future.done():
        item.future.set_exception(error)


def _call_on(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    # A closed loop (the service is gone) raises RuntimeError: nobody is waiting for the answer then.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)
