"""Dynamic batching for one model: generic asyncio, nothing about HTTP, ONNX or images.

Callers ``await batcher.submit(item)``; a single loop groups queued items into batches and hands each
batch to ``handler`` (a coroutine function, or a plain function that then runs in a worker thread so
the event loop stays free). Semantics, after Ray Serve's batching:

- the wait timer starts at the *first* queued item, not when the loop wakes up;
- ``max_delay_s == 0`` is opportunistic: an idle request is dispatched at once, and whatever queued
  while a batch was in flight goes out together in the next one;
- a full batch goes out at once; at most ``max_in_flight`` batches run at the same time;
- the queue is bounded: :class:`QueueFullError` is raised at once when it is full, or when the batches
  queued ahead (at the recent batch time) would outlast the item's deadline;
- every item has a deadline: if its batch has not *started* by then it fails with
  :class:`DeadlineExceededError` (it is never run late);
- items whose caller was cancelled are dropped before a batch runs;
- with ``max_delay_s == 0`` a lone item may skip the queue: :meth:`run_alone_if_idle` prepares and
  runs it in one worker-thread call when nothing is queued or running (one thread hop instead of two,
  which is most of what a request at low load pays on a VM whose idle cores wake slowly);
- the handler must return one result per input (checked); a result that is an exception fails only
  that item, and a handler that raises fails only its own batch.

Items are expected to be valid already (decoded and checked per request before they get here), so one
bad input never reaches a batch.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")

BatchHandler = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]] | Callable[
    [list[T]], Sequence[R | BaseException]
]


SHED_HEADROOM = 0.75
"""An item is refused at once when its expected wait exceeds this share of its deadline: the estimate
is rough, and the rest of the deadline absorbs its error."""


class BatcherError(RuntimeError):
    """Base of the batcher's own failures."""


class QueueFullError(BatcherError):
    """The queue holds ``max_queue_size`` items already; the caller should retry later."""

    def __init__(self, name: str, size: int, retry_after_s: float) -> None:
        super().__init__(f"{name}: queue is full ({size} requests waiting); retry later")
        self.retry_after_s = retry_after_s


class DeadlineExceededError(BatcherError):
    """The item's batch did not start before its deadline."""


class BatcherStoppedError(BatcherError):
    """The batcher is stopping or stopped and accepts no new work."""


@dataclass(frozen=True)
class Completed(Generic[R]):
    """A result with how it was obtained, for per-request timings."""

    value: R
    queue_wait_s: float
    run_s: float
    batch_size: int


@dataclass
class _Item(Generic[T, R]):
    value: T
    future: asyncio.Future[Completed[R]]
    enqueued_at: float
    deadline: float | None
    timer: asyncio.TimerHandle | None = None
    started: bool = False


@dataclass
class BatcherConfig:
    max_batch_size: int = 16
    max_delay_s: float = 0.0
    max_queue_size: int = 256
    max_in_flight: int = 1
    timeout_s: float | None = None
    """Default per-item deadline, from submission to the start of its batch."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_delay_s < 0:
            raise ValueError(f"max_delay_s must be >= 0, got {self.max_delay_s}")
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {self.max_queue_size}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")


@dataclass
class BatcherHooks:
    """Optional callbacks for metrics; they run on the event loop and must be cheap."""

    on_queue_depth: Callable[[int], None] | None = None
    on_batch: Callable[[int, float], None] | None = None
    """Called with (batch size, run seconds) after every batch."""


class Batcher(Generic[T, R]):
    """Groups submitted items into batches for ``handler``. Call :meth:`start` and :meth:`stop`
    from the application's lifespan."""

    def __init__(self, handler: BatchHandler[T, R], config: BatcherConfig | None = None, *,
                 name: str = "batcher", hooks: BatcherHooks | None = None) -> None:
        self._handler = handler
        # A coroutine function, or an object whose ``__call__`` is one.
        self._is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            type(handler).__call__
        )
        self.config = config or BatcherConfig()
        self.name = name
        self._hooks = hooks or BatcherHooks()
        self._queue: deque[_Item[T, R]] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self.config.max_in_flight)
        self._running: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._accepting = False
        self._flushing = False
        self._recent_run_s = 0.05
        self._recent_item_s = 0.0  # batch time per image, for the expected wait; 0 until a batch ran
        self._running_items = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is not None:
            return
        if not self._is_async:
            # Dedicated threads: inference never waits behind preprocessing work in a shared pool.
            self._executor = ThreadPoolExecutor(self.config.max_in_flight, thread_name_prefix=f"{self.name}-run")
        self._accepting = True
        self._loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop(), name=f"{self.name}-loop")

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new items, let everything queued or running finish (bounded by ``drain_timeout_s``),
        then fail whatever is left."""
        self._accepting = False
        deadline = time.monotonic() + drain_timeout_s
        while (self._live_queue() or self._running) and time.monotonic() < deadline:
            self._arrived.set()
            await asyncio.sleep(0.005)
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        while self._queue:
            self._fail(self._queue.popleft(), BatcherStoppedError(f"{self.name}: stopped before this request ran"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def flush(self) -> None:
        """Stop waiting for batches to fill (a drain started): what is queued goes out as soon as it can.
        New items are still accepted until :meth:`stop`. Safe to call from a signal handler."""
        self._flushing = True
        if self._loop_task is not None:
            # Wake the loop through the thread-safe path: a signal handler may interrupt the loop itself.
            self._loop_task.get_loop().call_soon_threadsafe(self._arrived.set)

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queue_depth(self) -> int:
        return self._live_queue()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    # -- submission ------------------------------------------------------------------------------

    async def submit(self, value: T, *, timeout_s: float | None = None) -> Completed[R]:
        """Queue ``value`` and wait for its result. ``timeout_s`` (default: the config's) bounds the
        wait until its batch starts, not the batch's own run time."""
        if not self._accepting:
            raise BatcherStoppedError(f"{self.name}: not accepting requests (stopping or not started)")
        if len(self._queue) >= self.config.max_queue_size:
            self._purge_done()
            if len(self._queue) >= self.config.max_queue_size:
                raise QueueFullError(self.name, len(self._queue), self._retry_after_s())
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        if timeout is not None and self._expected_wait_s() > SHED_HEADROOM * timeout:
            # It would only time out in the queue: refuse now, while the caller can still go elsewhere.
            raise QueueFullError(self.name, len(self._queue), self._retry_after_s())
        loop = asyncio.get_running_loop()
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
        now = time.perf_counter()
        item: _Item[T, R] = _Item(value, loop.create_future(), now, None if timeout is None else now + timeout)
        if timeout is not None:
            item.timer = loop.call_later(timeout, self._expire, item)
        self._queue.append(item)
        self._arrived.set()
        self._report_depth()
        try:
            # A cancelled caller (client gone) cancels the future too; the loop then skips the item.
            return await item.future
        finally:
            if item.timer is not None:
                item.timer.cancel()
            if not item.future.done():
                item.future.cancel()

    async def run_alone_if_idle(self, prepare: Callable[[], T]) -> Completed[R] | None:
        """When nothing is queued or running, take a slot and run ``prepare()`` then the handler on its
        result as a batch of one, in one call on the worker thread; else return None at once (the caller
        prepares and submits as usual). Only for a plain-function handler, and only with
        ``max_delay_s == 0``: a configured delay means a lone item should wait for company. Errors from
        ``prepare`` or the handler go to this caller alone, and the slot is held until the thread is done
        even if the caller is cancelled, so ``max_in_flight`` holds."""
        if (not self._accepting or self._is_async or self._executor is None or self.config.max_delay_s > 0
                or self._live_queue() or self._running or self._slots.locked()):
            return None
        await self._slots.acquire()  # free (checked above), so this does not suspend
        self._running_items += 1
        task = asyncio.get_running_loop().create_task(self._run_alone(prepare), name=f"{self.name}-alone")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    async def _run_alone(self, prepare: Callable[[], T]) -> Completed[R]:
        handler = cast(Callable[[list[T]], Sequence[R | BaseException]], self._handler)  # not async: checked

        def work() -> tuple[R | BaseException, float]:
            value = prepare()
            started = time.perf_counter()
            results = handler([value])
            if len(results) != 1:
                raise BatcherError(f"{self.name}: handler returned {len(results)} results for 1 input")
            return results[0], time.perf_counter() - started

        try:
            assert self._executor is not None
            result, run_s = await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except asyncio.CancelledError:
            # Only stop() cancels this task (its caller is shielded from it): answer like a queued item.
            raise BatcherStoppedError(f"{self.name}: stopped while this request ran") from None
        finally:
            self._slots.release()
            self._running_items -= 1
            self._arrived.set()  # items that queued meanwhile go out now
        self._after_batch(1, run_s)
        if isinstance(result, BaseException):
            raise result
        return Completed(result, 0.0, run_s, 1)

    # -- the loop --------------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._purge_done()
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if self.config.max_delay_s > 0 and not self._flushing:
                # Timer from the first live item's arrival; a full queue cuts the wait short.
                close_at = self._queue[0].enqueued_at + self.config.max_delay_s
                while self._live_queue() < self.config.max_batch_size and not self._flushing:
                    remaining = close_at - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    except TimeoutError:
                        break
            await self._slots.acquire()
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._run_batch(batch), name=f"{self.name}-batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take_batch(self) -> list[_Item[T, R]]:
        batch: list[_Item[T, R]] = []
        while self._queue and len(batch) < self.config.max_batch_size:
            item = self._queue.popleft()
            if item.future.done():  # cancelled by its caller or expired
                continue
            item.started = True
            if item.timer is not None:
                item.timer.cancel()
            batch.append(item)
        self._report_depth()
        return batch

    async def _run_batch(self, batch: list[_Item[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        values = [item.value for item in batch]
        self._running_items += len(batch)
        try:
            if self._is_async:
                results = await self._handler(values)  # type: ignore[misc]
            else:
                results = await loop.run_in_executor(self._executor, self._handler, values)
            if len(results) != len(batch):
                raise BatcherError(f"{self.name}: handler returned {len(results)} results for {len(batch)} inputs")
        except asyncio.CancelledError:
            for item in batch:
                self._fail(item, BatcherStoppedError(f"{self.name}: stopped while this request ran"))
            raise
        except Exception as error:  # a failing batch fails only its own items
            for item in batch:
                self._fail(item, error)
            return
        finally:
            self._slots.release()
            self._running_items -= len(batch)
        run_s = time.perf_counter() - started
        self._after_batch(len(batch), run_s)
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(Completed(result, started - item.enqueued_at, run_s, len(batch)))

    def _after_batch(self, size: int, run_s: float) -> None:
        self._recent_run_s = 0.8 * self._recent_run_s + 0.2 * run_s
        item_s = run_s / size
        self._recent_item_s = item_s if not self._recent_item_s else 0.7 * self._recent_item_s + 0.3 * item_s
        if self._hooks.on_batch is not None:
            self._hooks.on_batch(size, run_s)

    # -- helpers ---------------------------------------------------------------------------------

    def _expire(self, item: _Item[T, R]) -> None:
        if not item.started and not item.future.done():
            waited = time.perf_counter() - item.enqueued_at
            item.future.set_exception(
                DeadlineExceededError(f"{self.name}: request did not start within its deadline ({waited:.3f} s)")
            )
            self._report_depth()

    @staticmethod
    def _fail(item: _Item[T, R], error: BaseException) -> None:
        if not item.future.done():
            item.future.set_exception(error)

    def _purge_done(self) -> None:
        if any(item.future.done() for item in self._queue):
            self._queue = deque(item for item in self._queue if not item.future.done())
            self._report_depth()

    def _live_queue(self) -> int:
        return sum(1 for item in self._queue if not item.future.done())

    def _expected_wait_s(self) -> float:
        """Roughly how long a new item would wait for its batch to start: every image queued ahead of it
        and every image running, at the recent time per image, shared by the batches that may run at
        once (pessimistic: a running batch counts whole; refusing early beats timing out late)."""
        if len(self._running) < self.config.max_in_flight and self._live_queue() < self.config.max_batch_size:
            return 0.0  # a slot is free and the next batch has room: it starts about now
        ahead = self._live_queue() + self._running_items
        return ahead * self._recent_item_s / self.config.max_in_flight

    def _retry_after_s(self) -> float:
        # Time to work through the current queue at the recent batch rate, at least one second.
        batches = len(self._queue) / (self.config.max_batch_size * self.config.max_in_flight)
        return max(1.0, batches * self._recent_run_s)

    def _report_depth(self) -> None:
        if self._hooks.on_queue_depth is not None:
            self._hooks.on_queue_depth(self._live_queue())
