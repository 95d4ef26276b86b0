"""The inference process's side of ``SHARED_INFERENCE``: every front end's slot connections, and each
model's queue of calls, run by the model's own threads (as many as its batches in flight).

A model thread takes every call waiting for its model, in arrival order, up to the model's largest batch,
and runs them as one model call: batches that several front ends sent while the model was busy go out
together, which is what a GPU needs to be fed well. A lone call runs on its images where they lie in shared
memory; joined calls are copied into one array first. Each front end's answer is its rows of the outputs,
sent on the connection its call came by, so it cannot reach another batch. Protocol:
``service/inference_protocol.py``."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from service.inference_protocol import Attach, Attached, Call, Failure, Hello, Result, images_view
from service.metrics import ServiceMetrics
from service.model_runner import Outputs, Runtime

log = logging.getLogger("service.inference_server")


@dataclass(frozen=True)
class Served:
    """One loaded model as this process runs it."""

    runtime: Runtime
    max_batch_size: int
    input_shape: tuple[int, ...]
    in_flight: int = 1
    """Calls of this model that run at the same time (its batcher's, ``service/session_layout.py``)."""


@dataclass
class Channel:
    """One front-end slot: its connection and, once attached, its shared memory (mapped here)."""

    connection: Connection
    slug: str = ""
    memory: SharedMemory | None = None
    images: np.ndarray | None = None
    pending: bool = False
    """A call is queued or running: the mapping stays until it is answered."""
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, message: object) -> None:
        with contextlib.suppress(OSError):  # the front end is gone: nobody waits for this answer
            self.connection.send(message)

    def answer(self, message: Result | Failure) -> None:
        """A queued call's answer: the slot takes its next call from here on (or unmaps, if it has gone)."""
        with self.lock:
            self.pending = False
            if self.closed:
                self.release()
                return
        self.reply(message)

    def release(self) -> None:
        self.images = None
        if self.memory is not None:
            try:
                self.memory.close()
            except BufferError:  # a view still referenced somewhere: the garbage collector unmaps it
                log.warning("shared memory %s of %s still in use when its front end left", self.memory.name, self.slug)
            self.memory = None


@dataclass
class Pending:
    channel: Channel
    size: int
    admitted: int

    def images(self) -> np.ndarray:
        assert self.channel.images is not None, "attached before any call"
        return self.channel.images[:self.size]


class CallQueue:
    """Calls waiting for one model, taken in arrival order as many as fit in one model call."""

    def __init__(self, max_images: int) -> None:
        self.max_images = max_images
        self._calls: deque[Pending] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, call: Pending) -> None:
        with self._ready:
            self._calls.append(call)
            self._ready.notify()

    def take(self) -> tuple[list[Pending], int] | None:
        """The next calls to run together and the images still waiting after them; None once closed and
        empty."""
        with self._ready:
            while not self._calls and not self._closed:
                self._ready.wait()
            if not self._calls:
                return None
            group = [self._calls.popleft()]
            total = group[0].size
            while self._calls and total + self._calls[0].size <= self.max_images:
                total += self._calls[0].size
                group.append(self._calls.popleft())
            return group, sum(call.size for call in self._calls)

    def waiting_images(self) -> int:
        with self._ready:
            return sum(call.size for call in self._calls)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class InferenceServer:
    def __init__(self, models: dict[str, Served], hello: Hello, metrics: ServiceMetrics) -> None:
        self._models = models
        self._hello = hello
        self._metrics = metrics
        self._queues = {slug: CallQueue(model.max_batch_size) for slug, model in models.items()}
        self._threads = [threading.Thread(target=self._run_calls, args=(slug,), name=f"{slug}-run-{i}", daemon=True)
                         for slug, model in models.items() for i in range(model.in_flight)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float) -> None:
        """Run what is queued, then end the model threads (waiting at most ``timeout_s`` in all)."""
        for calls in self._queues.values():
            calls.close()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def waiting_images(self, slug: str) -> int:
        """Images of calls queued for ``slug`` and not yet taken by a model thread."""
        return self._queues[slug].waiting_images()

    def serve(self, connection: Connection) -> None:
        """One front-end connection, until it closes (run on a thread of its own)."""
        channel = Channel(connection)
        try:
            connection.send(self._hello)
            while True:
                self._receive(channel, connection.recv())
        except (OSError, EOFError):
            pass
        finally:
            with channel.lock:
                channel.closed = True
                if not channel.pending:
                    channel.release()
            connection.close()

    def _receive(self, channel: Channel, message: object) -> None:
        if isinstance(message, Attach):
            channel.reply(self._attach(channel, message))
        elif isinstance(message, Call):
            refused = self._refusal(channel, message)
            if refused is not None:
                channel.reply(Failure(refused))
                return
            channel.pending = True
            self._queues[channel.slug].put(Pending(channel, message.size, message.admitted))
        else:
            channel.reply(Failure(f"unexpected message {type(message).__name__}"))

    def _attach(self, channel: Channel, message: Attach) -> object:
        model = self._models.get(message.slug)
        if model is None:
            return Failure(f"{message.slug!r} is not served here; served: {sorted(self._models)}")
        if channel.memory is not None:
            return Failure(f"this connection is attached already (to {channel.slug})")
        if not 1 <= message.capacity <= model.max_batch_size:
            return Failure(f"{message.slug}: a slot of {message.capacity} images; batches here are 1 to "
                           f"{model.max_batch_size}")
        try:
            memory = SharedMemory(message.name)
        except OSError as error:
            return Failure(f"cannot open shared memory {message.name!r}: {error}")
        try:
            channel.images = images_view(memory, message.capacity, model.input_shape)
        except ValueError as error:
            memory.close()
            return Failure(str(error))
        channel.slug, channel.memory = message.slug, memory
        return Attached()

    @staticmethod
    def _refusal(channel: Channel, call: Call) -> str | None:
        if channel.images is None:
            return "a call before its slot was attached"
        if channel.pending:
            return "a call while this slot's previous call runs"
        if not 1 <= call.size <= len(channel.images):
            return f"{channel.slug}: a call of {call.size} images on a slot of {len(channel.images)}"
        return None

    def _run_calls(self, slug: str) -> None:
        calls = self._queues[slug]
        while (taken := calls.take()) is not None:
            group, waiting = taken
            for call, answer in zip(group, self._answers(slug, group, waiting), strict=True):
                call.channel.answer(answer)

    def _answers(self, slug: str, group: list[Pending], waiting: int) -> list[Result | Failure]:
        size = sum(call.size for call in group)
        # What the session choice reads: the front ends' admitted images plus those queued here (images still
        # preprocessing in another front end are not seen, so a lone call may spin beside them).
        try:
            outputs = self._call_model(slug, group, sum(call.admitted for call in group) + waiting)
            answers: list[Result | Failure] = list(split(outputs, [call.size for call in group]))
        except Exception as error:
            log.error("%s: inference failed for %d image(s) from %d call(s): %s", slug, size, len(group), error)
            return [Failure(f"{slug}: the model call failed: {error}")] * len(group)
        self._metrics.inference_batch_size.labels(slug).observe(size)
        return answers

    def _call_model(self, slug: str, group: list[Pending], admitted: int) -> Outputs:
        # A separate frame, so no view of a front end's memory outlives the call.
        batch = group[0].images() if len(group) == 1 else np.concatenate([call.images() for call in group])
        started = time.perf_counter()
        outputs = self._models[slug].runtime.run(batch, admitted)
        self._metrics.inference_seconds.labels(slug).observe(time.perf_counter() - started)
        return outputs


def split(outputs: Outputs, sizes: list[int]) -> Iterable[Result]:
    """Each call's rows of a joined model call's outputs (checked to have one row per image)."""
    logits, ood = outputs
    total = sum(sizes)
    rows = {name: len(values) for name, values in logits.items()} | ({"ood": len(ood)} if ood is not None else {})
    wrong = {name: n for name, n in rows.items() if n != total}
    if wrong:
        raise ValueError(f"outputs with {wrong} rows for {total} images")
    start = 0
    for size in sizes:
        end = start + size
        yield Result({name: values[start:end] for name, values in logits.items()},
                     None if ood is None else ood[start:end])
        start = end
