"""The dynamic batcher's semantics, timed with events (the batch function waits on an asyncio.Event)
rather than sleeps, after Ray Serve's test_batching.py."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.batching import (
    Batcher,
    BatcherConfig,
    BatcherError,
    BatcherHooks,
    BatcherStoppedError,
    DeadlineExceededError,
    QueueFullError,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Recorder:
    """An async batch handler that records its batches and can be held on an event."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        await self.release.wait()
        return [x * 10 for x in items]


async def until(predicate, within_s: float = 10.0) -> None:
    """Yield to the loop until ``predicate`` holds. Polls a condition, never sleeps for a result: the time
    bound only turns a hang into a failure, because a condition set by a worker thread may take a few GIL
    switch intervals (5 ms each) on a loaded host, far longer than a fixed number of loop turns."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        await asyncio.sleep(0)


def item(value):
    """What ``submit`` takes: a function that prepares the item (here, returns it as it is)."""
    return lambda: value


def make(handler, **config) -> Batcher:
    batcher = Batcher(handler, BatcherConfig(**config), name="test")
    batcher.start()
    return batcher


async def test_idle_single_request_is_not_delayed_when_delay_is_zero():
    # A huge timeout elsewhere would show up as a hang; with delay 0 the lone item goes at once.
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=8, max_delay_s=0.0)
    result = await asyncio.wait_for(batcher.submit(item(3)), timeout=1.0)
    assert result.value == 30 and result.batch_size == 1
    await batcher.stop()


async def test_full_batch_dispatches_immediately_despite_long_delay():
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=4, max_delay_s=3600)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(item(i)) for i in range(4))), timeout=2.0)
    assert [r.value for r in results] == [0, 10, 20, 30]
    assert recorder.batches == [[0, 1, 2, 3]]
    await batcher.stop()


async def test_timer_starts_at_first_item_not_at_last():
    # On a fake clock: the second item arrives exactly max_delay_s after the first, so the batch must go
    # at once. A timer restarted by the second item would wait another hour (the test would time out).
    now, reads = [0.0], []

    def clock() -> float:
        reads.append(now[0])
        return now[0]

    recorder = Recorder()
    batcher = Batcher(recorder, BatcherConfig(max_batch_size=100, max_delay_s=3600), name="test", clock=clock)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(item(1)))
    await until(lambda: batcher.queue_depth == 1)
    queued_at = len(reads)
    await until(lambda: len(reads) > queued_at)  # the loop read the clock: it is waiting for company
    now[0] = 3600.0
    second = asyncio.ensure_future(batcher.submit(item(2)))
    await asyncio.wait_for(asyncio.gather(first, second), timeout=2.0)
    assert recorder.batches == [[1, 2]]
    await batcher.stop()


async def test_items_queued_while_a_batch_runs_go_out_together():
    recorder = Recorder(hold=True)
    batcher = make(recorder, max_batch_size=8, max_delay_s=0.0)
    first = asyncio.ensure_future(batcher.submit(item(0)))
    await recorder.entered.wait()
    rest = [asyncio.ensure_future(batcher.submit(item(i))) for i in (1, 2, 3)]
    await until(lambda: batcher.queue_depth == 3)
    recorder.release.set()
    await asyncio.gather(first, *rest)
    assert recorder.batches == [[0], [1, 2, 3]]
    await batcher.stop()


async def test_queue_bound_rejects_at_once_with_retry_after():
    recorder = Recorder(hold=True)
    batcher = make(recorder, max_batch_size=1, max_queue_size=2)
    running = asyncio.ensure_future(batcher.submit(item(0)))
    await recorder.entered.wait()
    queued = [asyncio.ensure_future(batcher.submit(item(i))) for i in (1, 2)]
    await until(lambda: batcher.queue_depth == 2)
    with pytest.raises(QueueFullError) as caught:
        await batcher.submit(item(3))
    assert caught.value.retry_after_s >= 1
    recorder.release.set()
    assert [r.value for r in await asyncio.gather(running, *queued)] == [0, 10, 20]
    await batcher.stop()


async def test_deadline_expires_for_items_that_never_started():
    recorder = Recorder(hold=True)
    batcher = make(recorder, max_batch_size=1)
    running = asyncio.ensure_future(batcher.submit(item(0), timeout_s=0.05))
    await recorder.entered.wait()
    # The running item is past its deadline too, but it started in time, so it still completes.
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(item(1), timeout_s=0.05)
    recorder.release.set()
    assert (await running).value == 0
    assert recorder.batches == [[0]]  # the expired item never ran
    await batcher.stop()


async def test_cancelled_requests_are_dropped_before_the_batch_runs():
    recorder = Recorder(hold=True)
    batcher = make(recorder, max_batch_size=8)
    first = asyncio.ensure_future(batcher.submit(item(0)))
    await recorder.entered.wait()
    doomed = asyncio.ensure_future(batcher.submit(item(1)))
    kept = asyncio.ensure_future(batcher.submit(item(2)))
    await until(lambda: batcher.queue_depth == 2)
    doomed.cancel()
    await until(lambda: batcher.queue_depth == 1)
    recorder.release.set()
    await asyncio.gather(first, kept)
    assert recorder.batches == [[0], [2]]
    assert doomed.cancelled()
    await batcher.stop()


async def test_failing_batch_fails_only_its_own_items():
    calls = 0
    gate = asyncio.Event()

    async def handler(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
            raise RuntimeError("boom")
        return items

    batcher = make(handler, max_batch_size=2)
    bad = [asyncio.ensure_future(batcher.submit(item(i))) for i in (0, 1)]
    await until(lambda: calls == 1)
    good = [asyncio.ensure_future(batcher.submit(item(i))) for i in (2, 3)]
    await until(lambda: batcher.queue_depth == 2)
    gate.set()
    outcomes = await asyncio.gather(*bad, *good, return_exceptions=True)
    assert [type(o) for o in outcomes[:2]] == [RuntimeError, RuntimeError]
    assert [o.value for o in outcomes[2:]] == [2, 3]
    await batcher.stop()


async def test_exception_result_fails_only_that_item_and_length_is_checked():
    async def handler(items: list[int]) -> list[object]:
        return [ValueError("bad") if x == 1 else x for x in items]

    batcher = make(handler, max_batch_size=4, max_delay_s=3600)
    outcomes = await asyncio.gather(*(batcher.submit(item(i)) for i in range(4)), return_exceptions=True)
    assert isinstance(outcomes[1], ValueError)
    assert [o.value for o in (outcomes[0], outcomes[2], outcomes[3])] == [0, 2, 3]
    await batcher.stop()

    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = make(short, max_batch_size=2, max_delay_s=3600)
    outcomes = await asyncio.gather(batcher.submit(item(0)), batcher.submit(item(1)), return_exceptions=True)
    assert all("1 results for 2 inputs" in str(o) for o in outcomes)
    await batcher.stop()


async def test_one_batch_in_flight_by_default_and_more_when_configured():
    for in_flight, expected in ((1, 1), (2, 2)):
        recorder = Recorder(hold=True)
        batcher = make(recorder, max_batch_size=1, max_in_flight=in_flight)
        tasks = [asyncio.ensure_future(batcher.submit(item(i))) for i in range(3)]
        await until(lambda r=recorder, e=expected: len(r.batches) == e)
        for _ in range(20):  # give the loop every chance to start one more batch than allowed
            await asyncio.sleep(0)
        assert len(recorder.batches) == expected and batcher.in_flight == expected
        assert batcher.queue_depth == 3 - expected
        recorder.release.set()
        await asyncio.gather(*tasks)
        await batcher.stop()


async def test_sync_handler_runs_in_a_worker_thread():
    import threading

    seen: list[str] = []

    def handler(items: list[int]) -> list[int]:
        seen.append(threading.current_thread().name)
        return items

    batcher = make(handler)
    assert (await batcher.submit(item(7))).value == 7
    assert seen and seen[0] != threading.current_thread().name
    await batcher.stop()


class Gate:
    """A sync handler for the worker thread that records its batches and threads and can be held on a
    threading.Event; the test side waits on events in a helper thread, never on sleeps."""

    def __init__(self, hold: bool = False) -> None:
        import threading

        self.batches: list[list[int]] = []
        self.threads: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.active = 0
        self.most_active = 0
        if not hold:
            self.release.set()

    def __call__(self, items: list[int]) -> list[int]:
        import threading

        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.batches.append(list(items))
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(10)
        self.active -= 1
        return [x * 10 for x in items]


def preparing(value: int, threads: list[str]):
    def prepare() -> int:
        import threading

        threads.append(threading.current_thread().name)
        return value

    return prepare


def on_threads(handler, threads: int = 2, **config) -> tuple[Batcher, ThreadPoolExecutor]:
    """A batcher whose batches run on the ``threads`` threads that prepare its items."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="prep")
    batcher = Batcher(handler, BatcherConfig(run_on_preparing_threads=True, **config), name="test",
                      prepare_executor=pool)
    batcher.start()
    return batcher, pool


async def test_prepare_runs_in_the_prepare_executor_when_given():
    prepared: list[str] = []
    with ThreadPoolExecutor(1, thread_name_prefix="prep") as pool:
        batcher = Batcher(Recorder(), BatcherConfig(), name="test", prepare_executor=pool)
        batcher.start()
        done = await batcher.submit(preparing(2, prepared))
        await batcher.stop()
    assert done.value == 20 and prepared[0].startswith("prep")


async def test_a_lone_item_is_prepared_and_run_in_one_thread_call():
    gate, prepared, sizes = Gate(), [], []
    with ThreadPoolExecutor(2, thread_name_prefix="prep") as pool:
        batcher = Batcher(gate, BatcherConfig(max_batch_size=8, run_on_preparing_threads=True), name="test",
                          hooks=BatcherHooks(on_batch=lambda n, s: sizes.append(n)), prepare_executor=pool)
        batcher.start()
        done = await batcher.submit(preparing(3, prepared))
        await batcher.stop()
    assert done.value == 30 and done.batch_size == 1 and done.queue_wait_s < 0.5
    assert prepared == gate.threads and prepared[0].startswith("prep")
    assert sizes == [1] and batcher.in_flight == 0 and batcher.admitted == 0


async def test_items_prepared_while_a_batch_runs_go_out_together_when_it_is_done():
    gate, prepared = Gate(hold=True), []
    batcher, pool = on_threads(gate, max_batch_size=8)
    first = asyncio.ensure_future(batcher.submit(preparing(1, prepared)))
    await asyncio.to_thread(gate.entered.wait, 10)
    others = [asyncio.ensure_future(batcher.submit(preparing(i, prepared))) for i in (2, 3)]
    await until(lambda: batcher.queue_depth == 2)  # prepared by the free thread; the one slot is taken
    assert gate.batches == [[1]] and batcher.in_flight == 1
    gate.release.set()
    assert (await first).value == 10 and [(await t).value for t in others] == [20, 30]
    assert gate.batches == [[1], [2, 3]] and gate.most_active == 1
    # The thread that ran the first batch ran the next: nothing went back through the event loop.
    assert gate.threads[0] == gate.threads[1] and set(prepared) <= {f"prep_{i}" for i in range(2)}
    await batcher.stop()
    pool.shutdown()


async def test_a_thread_with_a_slot_gathers_waiting_uploads_into_one_batch():
    import threading

    gate, first_in = Gate(), threading.Event()
    batcher, pool = on_threads(gate, threads=1, max_batch_size=8, max_in_flight=1, gather_size=3)

    def held() -> int:  # the first upload is read while the others arrive
        assert first_in.wait(10)
        return 1

    tasks = [asyncio.ensure_future(batcher.submit(held))]
    tasks += [asyncio.ensure_future(batcher.submit(item(i))) for i in (2, 3, 4)]
    await until(lambda: batcher.admitted == 4)
    first_in.set()
    assert [(await t).value for t in tasks] == [10, 20, 30, 40]
    # One thread: the first batch gathered 3 (the one it read plus 2 waiting), the last went alone.
    assert gate.batches == [[1, 2, 3], [4]]
    await batcher.stop()
    pool.shutdown()


async def test_a_gathering_thread_prepares_at_most_gather_minus_one_more_uploads_however_many_fail():
    import threading

    order: list[str] = []
    first_in = threading.Event()

    def handler(items: list[int]) -> list[int]:
        order.append(f"batch {items}")
        return [x * 10 for x in items]

    def held() -> int:
        assert first_in.wait(10)
        order.append("prepare 1")
        return 1

    def broken(n: int):
        def prepare() -> int:
            order.append(f"broken {n}")
            raise ValueError("not an image")
        return prepare

    batcher, pool = on_threads(handler, threads=1, max_batch_size=8, max_in_flight=1, gather_size=2)
    first = asyncio.ensure_future(batcher.submit(held))
    failing = [asyncio.ensure_future(batcher.submit(broken(n))) for n in range(5)]
    last = asyncio.ensure_future(batcher.submit(item(2)))
    await until(lambda: batcher.admitted == 7)
    first_in.set()
    assert (await first).value == 10 and (await last).value == 20
    for task in failing:
        with pytest.raises(ValueError):
            await task
    # Uploads that fail to read do not keep a thread gathering: the first batch starts after one more read.
    assert order[:3] == ["prepare 1", "broken 0", "batch [1]"]
    await batcher.stop()
    pool.shutdown()


async def test_as_many_batches_run_at_once_as_slots_allow():
    gate = Gate(hold=True)
    batcher, pool = on_threads(gate, threads=3, max_batch_size=1, max_in_flight=2)
    tasks = [asyncio.ensure_future(batcher.submit(item(i))) for i in range(3)]
    await until(lambda: gate.active == 2 and batcher.queue_depth == 1)
    assert batcher.in_flight == 2
    gate.release.set()
    assert sorted([(await t).value for t in tasks]) == [0, 10, 20]
    assert gate.most_active == 2 and sorted(map(len, gate.batches)) == [1, 1, 1]
    await batcher.stop()
    pool.shutdown()


async def test_a_failing_prepare_or_batch_fails_only_its_own_callers_and_frees_the_slot():
    def handler(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("model failed")
        return [x * 10 for x in items]

    def broken() -> int:
        raise ValueError("not an image")

    batcher, pool = on_threads(handler, max_in_flight=1)
    with pytest.raises(ValueError, match="not an image"):
        await batcher.submit(broken)
    with pytest.raises(RuntimeError, match="model failed"):
        await batcher.submit(item(13))
    assert (await batcher.submit(item(4))).value == 40
    assert batcher.admitted == 0
    await until(lambda: batcher.in_flight == 0)  # the thread gives its slot back just after it answers
    await batcher.stop()
    pool.shutdown()


async def test_a_wrong_number_of_results_fails_the_batch():
    batcher, pool = on_threads(lambda items: [], max_in_flight=1)
    with pytest.raises(BatcherError, match="handler returned 0 results for 1 inputs"):
        await batcher.submit(item(1))
    await batcher.stop()
    pool.shutdown()


class Fatal(BaseException):
    """Not an Exception (as SystemExit or a test framework's failure is not)."""


async def test_a_base_exception_in_prepare_or_the_handler_reaches_its_callers_and_the_queue_still_runs():
    gate = Gate(hold=True)

    def handler(items: list[int]) -> list[int]:
        if 13 in items:
            gate(items)  # held while another item queues behind it
            raise Fatal("handler")
        return [x * 10 for x in items]

    def fatal() -> int:
        raise Fatal("prepare")

    batcher, pool = on_threads(handler, max_in_flight=1)
    with pytest.raises(Fatal, match="prepare"):
        await asyncio.wait_for(batcher.submit(fatal), 10)  # a hang guard, not a synchronisation
    failing = asyncio.ensure_future(batcher.submit(item(13)))
    await asyncio.to_thread(gate.entered.wait, 10)
    behind = asyncio.ensure_future(batcher.submit(item(4)))
    await until(lambda: batcher.queue_depth == 1)
    gate.release.set()
    with pytest.raises(Fatal, match="handler"):
        await asyncio.wait_for(failing, 10)
    assert (await asyncio.wait_for(behind, 10)).value == 40  # the thread went on with what queued
    assert batcher.admitted == 0
    await until(lambda: batcher.in_flight == 0)
    await batcher.stop()
    pool.shutdown()


async def test_a_cancelled_caller_is_left_out_and_a_running_batch_keeps_its_slot_until_done():
    gate = Gate(hold=True)
    batcher, pool = on_threads(gate, max_batch_size=8)
    running = asyncio.ensure_future(batcher.submit(item(1)))
    await asyncio.to_thread(gate.entered.wait, 10)
    gone = asyncio.ensure_future(batcher.submit(item(2)))
    kept = asyncio.ensure_future(batcher.submit(item(3)))
    await until(lambda: batcher.queue_depth == 2)
    running.cancel()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert batcher.in_flight == 1  # its thread still runs the batch
    assert batcher.queue_depth == 1  # the cancelled item no longer counts as queued
    gate.release.set()
    assert (await kept).value == 30
    assert gate.batches == [[1], [3]] and gate.most_active == 1
    await batcher.stop()
    pool.shutdown()


async def test_an_item_whose_deadline_passes_while_it_waits_for_a_slot_fails_and_never_runs():
    gate = Gate(hold=True)
    batcher, pool = on_threads(gate, max_batch_size=8)
    running = asyncio.ensure_future(batcher.submit(item(1)))
    await asyncio.to_thread(gate.entered.wait, 10)
    with pytest.raises(DeadlineExceededError, match="did not start within its deadline"):
        await batcher.submit(item(2), timeout_s=0.01)
    assert batcher.queue_depth == 0
    gate.release.set()
    assert (await running).value == 10 and gate.batches == [[1]]
    assert (await batcher.submit(item(5))).value == 50 and gate.batches == [[1], [5]]
    await batcher.stop()
    pool.shutdown()


async def test_a_run_outlasting_the_drain_fails_as_stopped_and_so_do_the_items_behind_it():
    gate = Gate(hold=True)
    batcher, pool = on_threads(gate, max_batch_size=8)
    running = asyncio.ensure_future(batcher.submit(item(1)))
    await asyncio.to_thread(gate.entered.wait, 10)
    queued = asyncio.ensure_future(batcher.submit(item(2)))
    await until(lambda: batcher.queue_depth == 1)
    await batcher.stop(drain_timeout_s=0)
    with pytest.raises(BatcherStoppedError, match="stopped while this request ran"):
        await running
    with pytest.raises(BatcherStoppedError, match="stopped before this request ran"):
        await queued
    with pytest.raises(BatcherStoppedError, match="not accepting"):
        await batcher.submit(item(3))
    gate.release.set()
    pool.shutdown()


async def test_an_async_handler_or_a_batching_delay_keeps_batches_off_the_preparing_threads():
    prepared: list[str] = []
    batcher, pool = on_threads(Recorder())
    assert (await batcher.submit(preparing(1, prepared))).value == 10  # an async handler: on the loop
    await batcher.stop()
    gate = Gate()
    waiting, _ = on_threads(gate, max_delay_s=3600)
    waiting.flush()  # no waiting for company in this test
    assert (await waiting.submit(preparing(2, prepared))).value == 20
    await waiting.stop()
    pool.shutdown()
    assert all(name.startswith("prep") for name in prepared) and gate.threads[0].startswith("test-run")


async def test_admission_counts_every_item_until_it_is_answered_and_retry_after_follows_the_backlog():
    now = [0.0]

    class Timed(Gate):
        def __call__(self, items):
            now[0] += 3.0 * len(items)  # each item takes 3 s on the fake clock
            return super().__call__(items)

    gate = Timed()
    batcher = Batcher(gate, BatcherConfig(max_batch_size=1, max_queue_size=1), name="test", clock=lambda: now[0])
    batcher.start()
    assert (await batcher.submit(item(0))).value == 0  # a batch ran: 3 s per item from now on
    gate.release.clear()
    running = asyncio.ensure_future(batcher.submit(item(1)))
    await asyncio.to_thread(gate.entered.wait, 10)
    queued = asyncio.ensure_future(batcher.submit(item(2)))
    await until(lambda: batcher.queue_depth == 1)
    assert batcher.admitted == 2 == batcher.config.capacity
    with pytest.raises(QueueFullError, match=r"\(2 requests waiting\)") as caught:
        await batcher.submit(item(3))
    assert caught.value.retry_after_s == pytest.approx(6.0)  # two items ahead at 3 s each
    gate.release.set()
    assert [(await running).value, (await queued).value] == [10, 20]
    assert batcher.admitted == 0
    await batcher.stop()


async def test_an_item_whose_deadline_passed_while_it_was_prepared_is_refused_with_a_deadline_error():
    now = [0.0]

    def slow() -> int:
        now[0] += 5.0
        return 1

    batcher = Batcher(Recorder(), BatcherConfig(), name="test", clock=lambda: now[0])
    batcher.start()
    with pytest.raises(DeadlineExceededError, match="deadline passed while it was prepared"):
        await batcher.submit(slow, timeout_s=2.0)
    await batcher.stop()


async def test_stop_drains_queued_work_then_refuses_new_items():
    recorder = Recorder(hold=True)
    sizes: list[int] = []
    hooks = BatcherHooks(on_batch=lambda n, s: sizes.append(n))
    batcher = Batcher(recorder, BatcherConfig(max_batch_size=1), hooks=hooks)
    batcher.start()
    tasks = [asyncio.ensure_future(batcher.submit(item(i))) for i in range(3)]
    await recorder.entered.wait()
    stopping = asyncio.ensure_future(batcher.stop(drain_timeout_s=5))
    await until(lambda: not batcher.accepting)
    with pytest.raises(BatcherStoppedError):
        await batcher.submit(item(99))
    recorder.release.set()
    await stopping
    assert [t.result().value for t in tasks] == [0, 10, 20]
    assert sizes == [1, 1, 1]


def test_config_rejects_nonsense_naming_the_value():
    with pytest.raises(ValueError, match="max_batch_size must be >= 1, got 0"):
        BatcherConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="max_delay_s must be >= 0, got -1"):
        BatcherConfig(max_delay_s=-1)


async def test_stop_waits_for_items_still_preparing_and_a_late_one_is_refused_as_stopped():
    import threading

    release, entered = threading.Event(), threading.Event()

    def slow() -> int:
        entered.set()
        assert release.wait(10)
        return 5

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(Recorder(), BatcherConfig(), name="test", prepare_executor=pool)
        batcher.start()
        waiting = asyncio.ensure_future(batcher.submit(slow))
        await asyncio.to_thread(entered.wait, 10)
        stopping = asyncio.ensure_future(batcher.stop(drain_timeout_s=5))
        await until(lambda: not batcher.accepting)
        release.set()
        await stopping
        assert (await waiting).value == 50  # it was admitted: the drain waited for it to run
        late = Batcher(Recorder(), BatcherConfig(), name="late", prepare_executor=pool)
        late.start()
        release.clear()
        entered.clear()
        task = asyncio.ensure_future(late.submit(slow))
        await asyncio.to_thread(entered.wait, 10)
        await late.stop(drain_timeout_s=0)
        release.set()
        with pytest.raises(BatcherStoppedError):
            await task
