"""What a batcher is configured with, reports through and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")

@dataclass(frozen=True)
class Completed(Generic[R]):
    """A result with how it was obtained, for per-request timings."""

    value: R
    prepare_s: float
    queue_wait_s: float
    run_s: float
    batch_size: int


@dataclass
class BatcherConfig:
    max_batch_size: int = 16
    max_delay_s: float = 0.0
    max_queue_size: int = 256
    max_in_flight: int = 1
    timeout_s: float | None = None
    """Default per-item deadline, from submission to the start of its batch."""
    gather_size: int = 1
    """On the preparing threads: how many waiting items a thread with a slot prepares into one batch."""
    run_on_preparing_threads: bool = False
    """With a plain-function handler and no delay, run batches on the threads that prepare the items
    (``service/batching/preparing_threads.py``)."""

    def __post_init__(self) -> None:
        for name, low in (("max_batch_size", 1), ("max_delay_s", 0), ("max_queue_size", 1), ("max_in_flight", 1),
                          ("gather_size", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")

    @property
    def capacity(self) -> int:
        """Items admitted at most: a full queue plus the batches running."""
        return self.max_queue_size + self.max_batch_size * self.max_in_flight


@dataclass
class BatcherHooks:
    """Optional callbacks for metrics; they run on the event loop and must be cheap."""

    on_load: Callable[[int, int], None] | None = None
    """Called with (items queued, items admitted) whenever either changes."""
    on_batch: Callable[[int, float], None] | None = None
    """Called with (batch size, run seconds) after every batch."""
