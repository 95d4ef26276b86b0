"""A front end's side of ``SHARED_INFERENCE``: the link to the inference process (is it up?) and each model's
shared-memory slots, behind the same :class:`~service.model_runner.Runtime` a local backend gives
(``run(batch, admitted) -> outputs``). Protocol and memory layout: ``service/inference_protocol.py``."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from service.errors import InferenceUnavailableError, ModelLoadError
from service.inference_protocol import (
    SHM_FOLDER,
    Attach,
    Call,
    Failure,
    Hello,
    InferenceAddress,
    RemoteModel,
    Result,
    images_view,
    region_bytes,
)
from service.model_runner import Outputs, Runtime

log = logging.getLogger("service.inference_client")
CALL_TIMEOUT_S = 60.0
"""A model call unanswered this long is taken for a stuck inference process: its batch fails with 503 and
the slot reconnects (the answer, should it come, is dropped with the old connection)."""
RECONNECT_S = (0.05, 1.0)
"""First and longest wait between tries to reach a restarting inference process."""
UNAVAILABLE = "the inference process is unavailable (it is being restarted); retry"


class InferenceLink:
    """Connections to the inference process, and whether it is up: a watcher connection sees it go (EOF)
    and reconnects once a new one listens."""

    def __init__(self, address: InferenceAddress, on_change: Callable[[bool], None] = lambda up: None) -> None:
        """``on_change(up)`` is called from the watcher thread when the inference process goes or comes back."""
        self.address = address
        self._on_change = on_change
        self._up = threading.Event()
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None
        self.generation = 0
        """Counts the inference processes this link has reached: a slot connected to an earlier one reconnects
        before its next call instead of failing it on a dead connection."""

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def open(self) -> tuple[Connection, Hello]:
        """A new authenticated connection and what the inference process serves; 503 when unreachable."""
        try:
            connection = Client(self.address.path, family="AF_UNIX", authkey=self.address.authkey)
        except (OSError, EOFError, AuthenticationError) as error:
            raise InferenceUnavailableError(UNAVAILABLE) from error
        try:
            hello = connection.recv()
        except (OSError, EOFError) as error:
            connection.close()
            raise InferenceUnavailableError(UNAVAILABLE) from error
        return connection, hello

    def start(self) -> Hello:
        """Connect (the parent starts front ends once the inference process listens) and start watching."""
        try:
            connection, hello = self.open()
        except InferenceUnavailableError as error:
            raise ModelLoadError(f"cannot reach the inference process at {self.address.path}") from error
        self.generation += 1
        self._up.set()
        self._watcher = threading.Thread(target=self._watch, args=(connection,), name="inference-link", daemon=True)
        self._watcher.start()
        return hello

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self, connection: Connection) -> None:
        while not self._stopped.is_set():
            try:
                if connection.poll(0.5):  # the inference process sends nothing after its hello: this is EOF
                    connection.recv()
            except (OSError, EOFError):
                connection.close()
                self._up.clear()
                if self._stopped.is_set():
                    return
                log.error("the inference process is gone: answering 503 until it is back")
                self._on_change(False)
                reconnected = self._reconnect()
                if reconnected is None:
                    return
                connection = reconnected
        connection.close()

    def _reconnect(self) -> Connection | None:
        """A connection once the inference process is back; None when stopped first."""
        wait_s = RECONNECT_S[0]
        while not self._stopped.wait(wait_s):
            try:
                connection, _ = self.open()
            except InferenceUnavailableError:
                wait_s = min(wait_s * 2, RECONNECT_S[1])
                continue
            self.generation += 1
            self._up.set()
            log.info("the inference process is back")
            self._on_change(True)
            return connection
        return None


class Slot:
    """One batch in flight: a shared-memory region this front end owns, and its own connection."""

    def __init__(self, link: InferenceLink, slug: str, model: RemoteModel, capacity: int) -> None:
        self._link, self.slug, self._model, self.capacity = link, slug, model, capacity
        size = region_bytes(capacity, model.input_shape)
        free = _shm_free_bytes()
        if free is not None and size > free:
            raise ModelLoadError(f"{slug}: a batch slot needs {size} bytes of shared memory and {SHM_FOLDER} has "
                                 f"{free} free; give the container more (--shm-size) or lower MAX_BATCH_SIZE")
        self.memory = SharedMemory(link.address.segment_name(), create=True, size=size)
        self.images: np.ndarray | None = images_view(self.memory, capacity, model.input_shape)
        self.images.fill(0)  # commits the pages now: a full /dev/shm fails here, not mid-request
        self._connection: Connection | None = None
        self._generation = 0

    def call(self, items: list[np.ndarray], admitted: int) -> Outputs:
        size = len(items)
        if not 1 <= size <= self.capacity:
            raise ValueError(f"{self.slug}: a batch of {size} images does not fit its slot of {self.capacity}")
        assert self.images is not None, "closed"
        np.stack(items, out=self.images[:size])  # raises on an image of another shape
        connection = self.connect()
        try:
            connection.send(Call(size, admitted))
            if not connection.poll(CALL_TIMEOUT_S):
                raise TimeoutError(f"no answer within {CALL_TIMEOUT_S:.0f} s")
            reply = connection.recv()
        except (OSError, EOFError) as error:  # TimeoutError is an OSError
            self._drop()
            log.error("%s: the inference process did not answer a batch of %d: %s", self.slug, size, error or "EOF")
            raise InferenceUnavailableError(UNAVAILABLE) from error
        if isinstance(reply, Failure):
            raise RuntimeError(reply.message)
        assert isinstance(reply, Result), type(reply)
        return reply.logits, reply.ood

    def connect(self) -> Connection:
        generation = self._link.generation
        if self._connection is not None and generation == self._generation:
            return self._connection
        self._drop()
        connection, hello = self._link.open()
        served = hello.models.get(self.slug)
        if served is None or served.version != self._model.version:
            connection.close()
            now = "none" if served is None else f"version {served.version}"
            raise InferenceUnavailableError(f"the inference process now serves {self.slug} {now}, this worker "
                                            f"version {self._model.version}: restart the service")
        try:
            connection.send(Attach(self.slug, self.memory.name, self.capacity))
            reply = connection.recv()
        except (OSError, EOFError) as error:
            connection.close()
            raise InferenceUnavailableError(UNAVAILABLE) from error
        if isinstance(reply, Failure):
            # The batch never ran, and a restarted inference process may accept the slot: 503, not 500.
            connection.close()
            log.error("%s: the inference process refused this worker's slot: %s", self.slug, reply.message)
            raise InferenceUnavailableError(f"the inference process refused this worker's slot for {self.slug}: "
                                            f"{reply.message}")
        self._connection, self._generation = connection, generation
        return connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        self._drop()
        self.images = None  # the view must go before the mapping closes
        try:
            self.memory.close()
        except BufferError:  # a batch still being stacked after a drain timed out: unmapped when it is done
            log.warning("%s: shared memory %s still in use at shutdown", self.slug, self.memory.name)
        self.memory.unlink()


class ModelSlots:
    """One model's slots: as many as batches its batcher runs at a time, so a batch never waits for one."""

    def __init__(self, link: InferenceLink, slug: str, model: RemoteModel, capacity: int, count: int) -> None:
        self.model = model
        self.slots = [Slot(link, slug, model, capacity) for _ in range(count)]
        self._free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        for slot in self.slots:
            self._free.put(slot)

    def run(self, batch: list[np.ndarray], admitted: int) -> Outputs:
        slot = self._free.get()
        try:
            return slot.call(batch, admitted)
        finally:
            self._free.put(slot)

    def connect(self) -> None:
        for slot in self.slots:
            slot.connect()

    def runtime(self) -> Runtime:
        # The images go to the slot as they are: stacking them there is the one copy.
        def keep(items: list[np.ndarray]) -> tuple[Any, dict[int, BaseException]]:
            return items, {}

        return Runtime(self.run, self.model.provider, self.model.precision, prepare=keep, holds_model=False)

    def close(self) -> None:
        for slot in self.slots:
            slot.close()


def _shm_free_bytes() -> int | None:
    try:
        stats = os.statvfs(SHM_FOLDER)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize
