"""Which of a model's ONNX Runtime sessions runs a batch: spinning or sleeping intra-op threads.

Threads that sleep between the parallel parts of a model call are woken for every part, which costs a
lone image its latency (one ConvNeXt-tiny image: 38 ms spinning, 46 ms sleeping on an idle 2-core VM,
issue 20). Spinning threads cost the cores they hold: beside uploads being preprocessed they slow the
pipeline, and on a host whose cores other processes share they can double the call (77 against 38.5 ms
measured on this VM under a neighbour's load; BENCHMARKS.md, "Spinning"). So a batch spins only when it
is all its model has to do, and only while spinning is measured to be faster there: the run times of
lone one-image calls on each session are tracked, and every :data:`PROBE_EVERY` th lone call goes to
the session out of favour, so the choice follows the host.

Each session is judged by the fastest of its last :data:`RECENT` lone calls. Interference only ever
makes a call slower, and a spinning call is hit hardest (a lone call at the tail of a load, beside the
load generator's last responses, can take three times its time): a moving average remembered such calls
long after, and kept a server on the slower session for hundreds of calls (BENCHMARKS.md, "Peers"). The
fastest recent call forgets them at once, and still follows a host whose every recent call got slower.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

S = TypeVar("S")
T = TypeVar("T")

PROBE_EVERY = 20
"""One lone call in this many runs on the session out of favour: at most 1/20 of the difference is paid
to keep measuring it."""
RECENT = 5
"""Lone calls per session whose fastest judges it."""


class Sessions(Generic[S]):
    """A model's ``sleeping`` session, for batches that share the cores with other work, and optionally a
    ``spinning`` one (threads spin during a call and stop when it returns) for a lone batch while it is
    the faster. :meth:`run` is called from the batcher's worker threads."""

    def __init__(self, sleeping: S, spinning: S | None = None, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.sleeping = sleeping
        self.spinning = spinning
        self._clock = clock
        self._lock = threading.Lock()
        self._recent_s: dict[bool, deque[float]] = {False: deque(maxlen=RECENT), True: deque(maxlen=RECENT)}
        """The last lone one-image calls' run times, by whether the session spins."""
        self._lone_calls = 0

    @property
    def every(self) -> list[S]:
        return [self.sleeping] if self.spinning is None else [self.sleeping, self.spinning]

    def run(self, batch_size: int, admitted: int, call: Callable[[S], T]) -> T:
        """``call`` with the session for a batch of ``batch_size`` when the model has ``admitted`` images
        in all (preprocessing, queued or running, this batch included)."""
        if self.spinning is None or admitted > batch_size:
            return call(self.sleeping)
        spins = self._lone_choice()
        started = self._clock()
        result = call(self.spinning if spins else self.sleeping)
        if batch_size == 1:  # one image: comparable between calls
            self._record(spins, self._clock() - started)
        return result

    def prefers_spinning(self) -> bool:
        """Whether a lone batch would spin now, probes aside."""
        sleeping, spinning = self._recent_s[False], self._recent_s[True]
        return bool(sleeping) and bool(spinning) and min(spinning) < min(sleeping)

    def _lone_choice(self) -> bool:
        with self._lock:
            self._lone_calls += 1
            for spins in (True, False):  # each session measured once before any comparison
                if not self._recent_s[spins]:
                    return spins
            probe = self._lone_calls % PROBE_EVERY == 0
            return self.prefers_spinning() != probe

    def _record(self, spins: bool, seconds: float) -> None:
        with self._lock:
            self._recent_s[spins].append(seconds)
