"""Dynamic batching for one model: generic asyncio, nothing about HTTP, ONNX or images.

Callers ``await batcher.submit(prepare)``: ``prepare()`` makes the item (for the service, an upload's
preprocessing) and a single loop groups prepared items into batches for ``handler`` (a coroutine
function, or a plain function that then runs in a worker thread so the event loop stays free).
Semantics, after Ray Serve's batching:

- one admission gate: an item is refused at once (:class:`QueueFullError`, with a computed
  ``retry_after_s``) when the admitted items (preparing, queued or running) fill the capacity (a full
  queue plus the batches that may run), or when the work ahead of it would outlast its deadline;
- every item is prepared before it queues, so a bad input fails only its own caller; ``prepare`` runs in
  ``prepare_executor`` (inline on the loop without one);
- the wait timer starts at the *first* queued item, not when the loop wakes up;
- ``max_delay_s == 0`` is opportunistic: an idle item is dispatched at once, and whatever queued while
  a batch was in flight goes out together in the next one;
- ``run_on_preparing_threads`` (plain-function handler, no delay): batches run on the threads that
  prepare the items, with no hop through the event loop in between, and a lone item is prepared and run
  in one thread call (``service/batching/preparing_threads.py``);
- a full batch goes out at once; at most ``max_in_flight`` batches run at the same time;
- every item has a deadline, from its submission: if its batch has not *started* by then it fails with
  :class:`DeadlineExceededError` (it is never run late);
- items whose caller was cancelled are dropped before a batch runs;
- the handler must return one result per input (checked); a result that is an exception fails only
  that item, and a handler that raises fails only its own batch.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar, cast

from service.batching.config import BatcherConfig, BatcherHooks, Completed
from service.batching.errors import BatcherError, BatcherStoppedError, DeadlineExceededError, QueueFullError
from service.batching.preparing_threads import PreparingThreads, SyncHandler, fail, settle

T = TypeVar("T")
R = TypeVar("R")

AsyncHandler = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]

SHED_HEADROOM = 0.75
"""An item is refused at once when its expected wait exceeds this share of its deadline: the estimate
is rough, and the rest of the deadline absorbs its error."""



@dataclass
class _Item(Generic[T, R]):
    value: T
    prepare_s: float
    future: asyncio.Future[Completed[R]]
    enqueued_at: float
    started: bool = False


class Batcher(Generic[T, R]):
    """Groups submitted items into batches for ``handler``. Call :meth:`start` and :meth:`stop`
    from the application's lifespan."""

    def __init__(self, handler: SyncHandler[T, R] | AsyncHandler[T, R], config: BatcherConfig | None = None, *,
                 name: str = "batcher", hooks: BatcherHooks | None = None,
                 prepare_executor: Executor | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        # A coroutine function, or an object whose ``__call__`` is one.
        is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__)
        self._sync_handler = None if is_async else cast(SyncHandler[T, R], handler)
        self._call_handler: AsyncHandler[T, R] = (
            cast(AsyncHandler[T, R], handler) if self._sync_handler is None
            else partial(self._in_worker, self._sync_handler))
        self.config = config or BatcherConfig()
        self.name = name
        self._hooks = hooks or BatcherHooks()
        self._prepare_executor = prepare_executor
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds. Tests pass their own.
        self._clock = clock
        self._queue: deque[_Item[T, R]] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self.config.max_in_flight)
        self._running: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        # Dedicated threads for a plain-function handler: inference never waits behind preprocessing work
        # in a shared pool. Threads start on first use.
        self._executor = ThreadPoolExecutor(self.config.max_in_flight, thread_name_prefix=f"{name}-run")
        self._accepting = False
        self._flushing = False
        self._admitted = 0
        self._recent_item_s = 0.0  # batch time per item, for the expected wait; 0 until a batch ran
        self._preparing_threads = None if not self._on_preparing_threads() else PreparingThreads(
            cast(SyncHandler[T, R], self._sync_handler), prepare_executor or self._executor, name=name,
            max_batch_size=self.config.max_batch_size, max_in_flight=self.config.max_in_flight, clock=clock,
            on_batch=self._after_batch, gather=self.config.gather_size)

    def _on_preparing_threads(self) -> bool:
        return self.config.run_on_preparing_threads and self.config.max_delay_s == 0 and self._sync_handler is not None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is not None:
            return
        self._accepting = True
        self._loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop(), name=f"{self.name}-loop")

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new items, let everything queued or running finish (bounded by ``drain_timeout_s``),
        then fail whatever is left."""
        self._accepting = False
        deadline = time.monotonic() + drain_timeout_s
        # Admitted items still preparing will queue next: wait for them too.
        while (self._admitted or self._live_queue() or self.in_flight) and time.monotonic() < deadline:
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
            fail(self._queue.popleft(), BatcherStoppedError(f"{self.name}: stopped before this request ran"))
        if self._preparing_threads is not None:
            self._preparing_threads.fail_waiting()
        self._executor.shutdown(wait=False, cancel_futures=True)

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
    def admitted(self) -> int:
        return self._admitted

    @property
    def in_flight(self) -> int:
        """Batches running (on the preparing threads: threads holding a slot)."""
        threads = self._preparing_threads
        return len(self._running) if threads is None else threads.running

    # -- submission ------------------------------------------------------------------------------

    async def submit(self, prepare: Callable[[], T], *, timeout_s: float | None = None) -> Completed[R]:
        """Admit, prepare and batch one item and wait for its result. ``timeout_s`` (default: the
        config's) bounds the time from now until its batch starts, not the batch's own run time."""
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        self._admit(timeout)
        deadline = None if timeout is None else self._clock() + timeout
        self._admitted += 1
        self._report_load()
        try:
            if self._preparing_threads is not None:
                return await self._preparing_threads.submit(prepare, deadline)
            value, prepare_s = await self._prepare(prepare)
            return await self._enqueue(value, prepare_s, deadline)
        finally:
            self._admitted -= 1
            self._report_load()

    def _admit(self, timeout_s: float | None) -> None:
        """The one admission decision: refuse now, while the caller can still go elsewhere, rather than
        time out in the queue."""
        if not self._accepting:
            raise BatcherStoppedError(f"{self.name}: not accepting requests (stopping or not started)")
        if timeout_s is not None and timeout_s <= 0:
            raise DeadlineExceededError(f"{self.name}: the request's deadline passed before it was admitted")
        backlog_s = self._admitted * self._recent_item_s / self.config.max_in_flight
        # A free slot with room in the next batch starts about now, whatever the recent rate says.
        starts_now = self.in_flight < self.config.max_in_flight and self._admitted < self.config.max_batch_size
        expected_wait_s = 0.0 if starts_now else backlog_s
        if self._admitted >= self.config.capacity or (
                timeout_s is not None and expected_wait_s > SHED_HEADROOM * timeout_s):
            raise QueueFullError(self.name, self._admitted, retry_after_s=max(1.0, backlog_s))

    async def _prepare(self, prepare: Callable[[], T]) -> tuple[T, float]:
        if self._prepare_executor is None:
            started = self._clock()
            return prepare(), self._clock() - started
        return await asyncio.get_running_loop().run_in_executor(self._prepare_executor, _timed, prepare, self._clock)

    async def _enqueue(self, value: T, prepare_s: float, deadline: float | None) -> Completed[R]:
        if self._loop_task is None:  # stopped while this item was prepared: no loop will run it
            raise BatcherStoppedError(f"{self.name}: stopped before this request ran")
        loop = asyncio.get_running_loop()
        now = self._clock()
        if deadline is not None and now >= deadline:
            raise DeadlineExceededError(f"{self.name}: the request's deadline passed while it was prepared")
        item: _Item[T, R] = _Item(value, prepare_s, loop.create_future(), now)
        timer = None if deadline is None else loop.call_later(deadline - now, self._expire, item)
        self._queue.append(item)
        self._arrived.set()
        self._report_load()
        try:
            # A cancelled caller (client gone) cancels the future too; the loop then skips the item.
            return await item.future
        finally:
            if timer is not None:
                timer.cancel()
            if not item.future.done():
                item.future.cancel()

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
                await self._wait_for_company()
            await self._slots.acquire()
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._run_batch(batch), name=f"{self.name}-batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _wait_for_company(self) -> None:
        """Until ``max_delay_s`` after the first live item arrived, or a full batch, or a flush."""
        close_at = self._queue[0].enqueued_at + self.config.max_delay_s
        while self._live_queue() < self.config.max_batch_size and not self._flushing:
            remaining = close_at - self._clock()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Item[T, R]]:
        batch: list[_Item[T, R]] = []
        while self._queue and len(batch) < self.config.max_batch_size:
            item = self._queue.popleft()
            if item.future.done():  # cancelled by its caller or expired
                continue
            item.started = True
            batch.append(item)
        self._report_load()
        return batch

    async def _run_batch(self, batch: list[_Item[T, R]]) -> None:
        started = self._clock()
        values = [item.value for item in batch]
        try:
            results = await self._call_handler(values)
            if len(results) != len(batch):
                raise BatcherError(f"{self.name}: handler returned {len(results)} results for {len(batch)} inputs")
        except asyncio.CancelledError:
            for item in batch:
                fail(item, BatcherStoppedError(f"{self.name}: stopped while this request ran"))
            raise
        except Exception as error:  # a failing batch fails only its own items
            for item in batch:
                fail(item, error)
            return
        finally:
            self._slots.release()
        run_s = self._clock() - started
        self._after_batch(len(batch), run_s)
        settle(batch, results, started, run_s)

    async def _in_worker(self, handler: SyncHandler[T, R], values: list[T]) -> Sequence[R | BaseException]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, handler, values)

    def _after_batch(self, size: int, run_s: float) -> None:
        item_s = run_s / size
        self._recent_item_s = item_s if not self._recent_item_s else 0.7 * self._recent_item_s + 0.3 * item_s
        if self._hooks.on_batch is not None:
            self._hooks.on_batch(size, run_s)

    # -- helpers ---------------------------------------------------------------------------------

    def _expire(self, item: _Item[T, R]) -> None:
        if not item.started and not item.future.done():
            waited = self._clock() - item.enqueued_at
            item.future.set_exception(
                DeadlineExceededError(f"{self.name}: request did not start within its deadline ({waited:.3f} s)")
            )
            self._report_load()

    def _purge_done(self) -> None:
        if any(item.future.done() for item in self._queue):
            self._queue = deque(item for item in self._queue if not item.future.done())
            self._report_load()

    def _live_queue(self) -> int:
        threads = self._preparing_threads
        return sum(1 for item in self._queue if not item.future.done()) + (0 if threads is None else threads.queued)

    def _report_load(self) -> None:
        if self._hooks.on_load is not None:
            self._hooks.on_load(self._live_queue(), self._admitted)


def _timed(prepare: Callable[[], T], clock: Callable[[], float]) -> tuple[T, float]:
    started = clock()
    return prepare(), clock() - started
