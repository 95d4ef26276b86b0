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

import contextlib
import glob
import math
import os
import secrets
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

import numpy as np

FLOAT32_BYTES = 4
SHM_FOLDER = "/dev/shm"


@dataclass(frozen=True)
class InferenceAddress:
    """Where the inference process listens, and the key its connections authenticate with."""

    path: str
    authkey: bytes
    memory_prefix: str = "catalog-shm-"
    """Every front end's shared memory is named this, its pid and ``-`` first (unique per service), so the
    parent can remove the segments of a front end that was killed before it could (:func:`remove_segments`)."""

    def segment_name(self) -> str:
        """A fresh name for a slot of this process."""
        return f"{self.memory_prefix}{os.getpid()}-{secrets.token_hex(8)}"


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


def remove_segments(address: InferenceAddress, pid: int | None = None) -> list[str]:
    """Unlink the shared memory of front end ``pid`` (of every front end when None): what a killed one left.
    Returns the names removed."""
    owner = address.memory_prefix + ("" if pid is None else f"{pid}-")
    removed = []
    for path in glob.glob(os.path.join(SHM_FOLDER, glob.escape(owner) + "*")):
        name = os.path.basename(path)
        with contextlib.suppress(FileNotFoundError):  # it unlinked it itself meanwhile
            os.unlink(path)
            removed.append(name)
            # It registered it with the resource tracker the parent shares, which would unlink it again.
            resource_tracker.unregister(f"/{name}", "shared_memory")
    return removed
