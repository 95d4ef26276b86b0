"""Which of a model's ONNX Runtime sessions runs a batch: the shared one (every batch while the model has
other work; one intra-op thread by default, ``service/session_layout.py``) or the lone one (the whole
thread budget, spinning by default) for a batch that is all its model has to do.

Threads that sleep between the parallel parts of a model call are woken for every part, which costs a
lone image its latency (one ConvNeXt-tiny image: 38 ms spinning, 46 ms sleeping on an idle 2-core VM,
issue 20). Spinning threads cost the cores they hold: beside uploads being preprocessed they slow the
pipeline, and on a host whose cores other processes share they can double the call (77 against 38.5 ms
measured on this VM under a neighbour's load; BENCHMARKS.md, "Spinning"). A lone image on one thread
is slower still (32 against 26 ms). So a batch runs on the lone session only when it is all its model
has to do, and only while that is measured to be faster: the run times of lone one-image calls on each
session are tracked, and every :data:`PROBE_EVERY` th lone call goes to the session out of favour, so
the choice follows the host.

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
EXPLORE_EVERY = 4
"""While a session has fewer than :data:`RECENT` lone calls behind it, one lone call in this many probes it.
A server's first lone calls come as a load starts or ends, beside uploads still being read, and the one
such call that judged a session kept a ConvNeXt-tiny server on its slower session for the first 20 calls
of a quiet spell (+12-16 ms at concurrency 1 in the first round of every peers run; BENCHMARKS.md)."""


class Sessions(Generic[S]):
    """A model's ``shared`` session, for batches that share the cores with other work, and optionally a
    ``lone`` one for a lone batch while it is the faster. :meth:`run` is called from the batcher's worker
    threads, several at once when the layout runs batches side by side."""

    def __init__(self, shared: S, lone: S | None = None, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.shared = shared
        self.lone = lone
        self._clock = clock
        self._lock = threading.Lock()
        self._recent_s: dict[bool, deque[float]] = {False: deque(maxlen=RECENT), True: deque(maxlen=RECENT)}
        """The last lone one-image calls' run times, by whether they ran on the lone session."""
        self._lone_calls = 0

    @property
    def every(self) -> list[S]:
        return [self.shared] if self.lone is None else [self.shared, self.lone]

    def run(self, batch_size: int, admitted: int, call: Callable[[S], T]) -> T:
        """``call`` with the session for a batch of ``batch_size`` when the model has ``admitted`` images
        in all (preprocessing, queued or running, this batch included)."""
        if self.lone is None or admitted > batch_size:
            return call(self.shared)
        if admitted == 0:
            # No request behind it: the runner's warm-up, at start-up beside whatever else is starting (in a
            # peers run, three other servers loading). Its time judged the lone session for the first round.
            return call(self.lone)
        on_lone = self._lone_choice()
        started = self._clock()
        result = call(self.lone if on_lone else self.shared)
        if batch_size == 1:  # one image: comparable between calls
            self._record(on_lone, self._clock() - started)
        return result

    def prefers_lone(self) -> bool:
        """Whether a lone batch would run on the lone session now, probes aside."""
        shared, lone = self._recent_s[False], self._recent_s[True]
        return bool(shared) and bool(lone) and min(lone) < min(shared)

    def _lone_choice(self) -> bool:
        with self._lock:
            self._lone_calls += 1
            for on_lone in (True, False):  # each session measured once before any comparison
                if not self._recent_s[on_lone]:
                    return on_lone
            favoured = self.prefers_lone()
            exploring = len(self._recent_s[not favoured]) < RECENT
            probe = self._lone_calls % (EXPLORE_EVERY if exploring else PROBE_EVERY) == 0
            return favoured != probe

    def _record(self, on_lone: bool, seconds: float) -> None:
        with self._lock:
            self._recent_s[on_lone].append(seconds)
