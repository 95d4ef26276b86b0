"""What a front end and the inference process say to each other (``SHARED_INFERENCE``), and the shared
memory a batch travels in.

Each front end owns its shared-memory slots: one per batch it may have in flight for a model, each sized for
that model's largest batch, created and unlinked by the front end (no allocator shared between processes).
A slot has its own connection to the inference process (a Unix socket, authenticated with a key the parent
generates), so one connection carries at most one call at a time and an answer cannot reach the wrong
batch. On a connection the inference process speaks first (:class:`Hello`); the front end then attaches its
slot (:class:`Attach`, answered by :class:`Attached`) and sends calls (:class:`Call`), each answered by
:class:`Result` or :class:`Failure`. The pixels stay in shared memory; the messages are small and pickled
(the outputs are a few floats per image and attribute, cheaper to pickle than to lay out in a second
region).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

import numpy as np

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class InferenceAddress:
    """Where the inference process listens, and the key its connections authenticate with."""

    path: str
    authkey: bytes


@dataclass(frozen=True)
class RemoteModel:
    """One model as the inference process loaded it (``error`` set and the rest unset when it could not)."""

    version: int | None
    provider: str = ""
    precision: str = ""
    max_batch_size: int = 0
    input_shape: tuple[int, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Hello:
    models: dict[str, RemoteModel]


@dataclass(frozen=True)
class Attach:
    """Run this connection's calls for ``slug`` on the images in shared memory ``name``."""

    slug: str
    name: str
    capacity: int
    """Images the region holds (at most the model's largest batch)."""


@dataclass(frozen=True)
class Attached:
    """The region is mapped; calls may follow."""


@dataclass(frozen=True)
class Call:
    """Run the first ``size`` images of the attached region; ``admitted``: images the front end's model has
    taken in (what the runtime's session choice reads)."""

    size: int
    admitted: int


@dataclass(frozen=True)
class Result:
    logits: dict[str, np.ndarray]
    ood: np.ndarray | None


@dataclass(frozen=True)
class Failure:
    """The call or attachment was refused, or the model call raised; the message names why."""

    message: str


def region_bytes(capacity: int, input_shape: tuple[int, ...]) -> int:
    return capacity * math.prod(input_shape) * FLOAT32_BYTES


def images_view(memory: SharedMemory, capacity: int, input_shape: tuple[int, ...]) -> np.ndarray:
    """The region as ``(capacity, *input_shape)`` float32 (raises when it is too small for that)."""
    needed = region_bytes(capacity, input_shape)
    if memory.size < needed:
        raise ValueError(f"shared memory {memory.name!r} holds {memory.size} bytes, {capacity} images of "
                         f"{input_shape} need {needed}")
    return np.ndarray((capacity, *input_shape), dtype=np.float32, buffer=memory.buf)
