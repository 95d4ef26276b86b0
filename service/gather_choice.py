"""Whether a model's batches on the preprocessing threads should gather several uploads: measured per model
at load, because it pays on some models and costs on others.

A thread that prepares 4 waiting uploads before running them as one batch pays each image's share of the
call's fixed costs once per 4. On the demo model (ConvNeXt-atto, 128 px) that was 1.06x the images/s in one
process and 1.10x with two workers; on ConvNeXt-tiny (224 px), whose batch of 4 costs more per image on one
thread than 4 calls of one, it was 0.94x (BENCHMARKS.md, "Gathering uploads into batches"). So the model is
timed on the session the batches run on, at 1 and at :data:`GATHER` images, and gathers when a batch is
clearly the cheaper per image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

log = logging.getLogger("service.gather_choice")

GATHER = 4
"""Uploads per gathered batch: the raw limit's best batch on the demo model (a call per core at once)."""
PAYS = 0.9
"""A batch of :data:`GATHER` is used when its per-image time is at most this share of one image's call."""
ROUNDS = (3, 10)
"""Timed calls at each size, at least and at most; each size is judged by its fastest (interference only
ever slows a call). Between the two, rounds go on while they fit :data:`BUDGET_S`: with 3, a host busy at
start-up (the test suite beside it) left two of the demo's five models judged not to gather (4.13 against
4.26 ms per image), where a quiet one measured 0.72-0.78."""
BUDGET_S = 0.5
"""Start-up time the rounds beyond the minimum may take."""
SLOW_S = 0.05
"""A one-image call slower than this is not probed: a call's fixed costs (under 1 ms) cannot make up a
measurable share of it, and timing batches of such a model would cost seconds at start-up."""


def measured_gather(run: Callable[[np.ndarray], object], input_shape: tuple[int, ...], max_batch_size: int,
                    clock: Callable[[], float] = time.perf_counter) -> tuple[int, str]:
    """The gather size for a model whose batch call is ``run`` (on the session its batches run on), and why."""
    size = min(GATHER, max_batch_size)
    if size < 2:
        return 1, f"batches are at most {max_batch_size} image"
    one = np.zeros((1, *input_shape), np.float32)
    several = np.zeros((size, *input_shape), np.float32)
    first = _timed(run, one, clock)
    if first > SLOW_S:  # a first call may allocate (a session not warmed, WARMUP=false): judged by a second
        first = _timed(run, one, clock)
    if first > SLOW_S:
        return 1, f"one image takes {first * 1e3:.0f} ms; not probed"
    _timed(run, several, clock)  # its first call at this size may allocate: timed, not judged
    singles: list[float] = []
    batches: list[float] = []
    least, most = ROUNDS
    started = clock()
    while len(singles) < least or (len(singles) < most and clock() - started < BUDGET_S):
        singles.append(_timed(run, one, clock))
        batches.append(_timed(run, several, clock) / size)
    single, batched = min(singles), min(batches)
    why = f"one image {single * 1e3:.2f} ms, {size} at once {batched * 1e3:.2f} ms each"
    return (size if batched <= PAYS * single else 1), why


def _timed(run: Callable[[np.ndarray], object], batch: np.ndarray, clock: Callable[[], float]) -> float:
    started = clock()
    run(batch)
    return clock() - started
