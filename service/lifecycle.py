"""Whether the service takes new work: started, draining, and by when a started drain must be over."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.errors import ShuttingDownError


@dataclass
class Lifecycle:
    drain_budget_s: float
    """From the first drain signal to the end of the drain: the shutdown delay plus the drain timeout."""
    started: bool = False
    draining: bool = False
    drain_deadline: float | None = None
    """``time.monotonic()`` by which a started drain must be over."""
    on_drain: list[Callable[[], None]] = field(default_factory=list)
    """Called once when the drain begins, possibly from a signal handler: each must be safe there."""

    @property
    def accepting(self) -> bool:
        return self.started and not self.draining

    def begin_drain(self) -> None:
        """Readiness turns false and new work is refused at once; admitted work still finishes, by
        ``drain_deadline`` (set by the first call)."""
        first = self.drain_deadline is None
        if first:
            self.drain_deadline = time.monotonic() + self.drain_budget_s
        self.draining = True
        if first:
            for listener in self.on_drain:
                listener()

    def drain_left_s(self) -> float:
        if self.drain_deadline is None:
            return self.drain_budget_s
        return max(0.0, self.drain_deadline - time.monotonic())

    def check_accepting(self) -> None:
        if self.draining:
            raise ShuttingDownError("the server is shutting down; retry on another replica")
