"""The batcher's own failures; the service maps each to an HTTP status in ``service/errors.py``."""

from __future__ import annotations


class BatcherError(RuntimeError):
    """Base of the batcher's own failures."""


class QueueFullError(BatcherError):
    """Admitting the item would exceed the capacity or its deadline; the caller should retry later."""

    def __init__(self, name: str, admitted: int, retry_after_s: float) -> None:
        super().__init__(f"{name}: queue is full ({admitted} requests waiting); retry later")
        self.retry_after_s = retry_after_s


class DeadlineExceededError(BatcherError):
    """The item's batch did not start before its deadline."""


class BatcherStoppedError(BatcherError):
    """The batcher is stopping or stopped and accepts no new work."""
