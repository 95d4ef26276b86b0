"""How a model's ONNX Runtime sessions share the CPU cores: how many intra-op threads the session that runs
batches under load gets, how many of its batches run at once, and whether a second session (more threads,
optionally spinning) serves lone batches. One place decides it, for the sessions and for the batcher.

With ``session_threads`` unset (0) on the CPU provider, a batch under load runs on **one** intra-op thread
and the batcher runs as many batches at once as the budget has cores: parallel parts of one call cost
CPU to hand out and wait for, so one thread per call does the most images per core. Measured on the
2-core VM (model alone, images/s): ConvNeXt-tiny int8 at 224 px, 30.8 per core on one thread against
45.1 on two (22.6 per core); the demo model 358 against 422 (211 per core). Served side by side at
concurrency 16 on a quiet 2-core VM, one thread with 2 batches in flight reached 0.88 of the searched raw
limit with 45.8 ms of CPU per ConvNeXt-tiny image, against 0.71 and 51.7 ms for two threads and one batch
(BENCHMARKS.md, "Session layout"). A lone image is the opposite: two
threads finish it sooner (26 against 32 ms), so the lone session keeps the whole budget and
:mod:`service.session_choice` sends a lone batch to whichever of the two its recent calls say is faster.

A set ``max_batches_in_flight`` (with ``session_threads`` unset) shares the budget out among that many
batches instead: each gets ``budget // max_batches_in_flight`` threads (at least 1), so 1 is the earlier
one-batch, whole-budget layout.

Setting ``session_threads`` keeps the earlier layout: that many threads for every batch, one batch at a
time unless ``max_batches_in_flight`` says otherwise, and a spinning copy for lone batches as
``spin_when_idle`` says.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import ENV_PREFIX, Settings

CPU_PROVIDER = "CPUExecutionProvider"
CPU_PROVIDERS = (CPU_PROVIDER, "torch-cpu")
"""Providers that run the model on the CPU cores preprocessing also uses."""


@dataclass(frozen=True)
class SessionLayout:
    shared_threads: int
    """Intra-op threads of the session every batch runs on while its model has other work."""
    batches_in_flight: int
    """Batches of one model that run at the same time (on the shared session, from the batcher's threads)."""
    lone_threads: int | None
    """Intra-op threads of the session a lone batch may run on; None when there is no such session."""
    lone_spins: bool
    """Whether the lone session's threads spin during a call (and stop when it returns)."""


def session_layout(settings: Settings, provider: str) -> SessionLayout:
    """The layout for a model served by ``provider`` (ONNX Runtime's name; any other provider, such as the
    torch backend's, gets one session of ``resolved_session_threads`` and no lone session)."""
    budget = settings.resolved_session_threads
    if provider != CPU_PROVIDER:
        if settings.spin_when_idle:
            raise ValueError(f"spin_when_idle=True spins CPU threads, and the model runs on {provider}: a second copy "
                             f"on the device would gain nothing; unset {ENV_PREFIX}SPIN_WHEN_IDLE")
        return SessionLayout(budget, settings.max_batches_in_flight or 1, None, False)
    split = settings.session_threads == 0  # the budget is shared out among the batches in flight
    # Batches on the preprocessing threads: no more run at once than there are threads to run them.
    cores = min(budget, settings.resolved_preprocess_threads) if on_preprocess_threads(settings, provider) else budget
    in_flight = settings.max_batches_in_flight or (cores if split else 1)
    # A set batch count below the cores splits them, or load would leave cores idle.
    shared = max(1, budget // in_flight) if split else budget
    spins = budget > 1 if settings.spin_when_idle is None else settings.spin_when_idle
    if spins and budget < 2:
        raise ValueError(f"spin_when_idle=True needs at least 2 session threads to spin, and session_threads "
                         f"resolves to {budget}: raise {ENV_PREFIX}SESSION_THREADS or unset the former")
    lone = budget if spins or budget > shared else None
    return SessionLayout(shared, in_flight, lone, spins)


def batches_in_flight(settings: Settings, provider: str) -> int:
    """How many batches of one model the batcher runs at once (``session_layout``'s, for any backend)."""
    return session_layout(settings, provider).batches_in_flight


def on_preprocess_threads(settings: Settings, provider: str) -> bool:
    """Whether a model's batches run on the threads that preprocess its uploads
    (``service/batching/preparing_threads.py``): as ``batches_on_preprocess_threads`` says, else for models
    this process runs on the CPU; never with a batching delay. Off by default with ``shared_inference``: a
    front end's batch is a wait on the inference process, and the inference process runs the front ends'
    batches on threads of its own, never through its batchers."""
    on = settings.batches_on_preprocess_threads
    if on is None:
        on = provider in CPU_PROVIDERS and not settings.shared_inference
    return on and not settings.max_queue_delay_s
