"""What the routes need from a model runtime, whatever it is: the :class:`Predictor` and
:class:`ReadyModel` protocols and the values they return. ``service/onnx_predictor.py`` implements them
with ONNX Runtime; tests substitute a fake that implements the same protocols."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from catalog.decoding import Row
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import Category, TaxonomyError, load_taxonomy
from service.errors import ModelNotReadyError, UnknownModelError


@dataclass(frozen=True)
class ModelInfo:
    """What the API says about one model; the same for every predictor."""

    name: str
    category: Category
    version: int
    spec: PreprocessSpec
    precision: str = "fp32"
    provider: str = "CPUExecutionProvider"
    ready: bool = True
    error: str | None = None
    versions: tuple[int, ...] = ()
    ood_threshold: float | None = None
    """Out-of-distribution score above which an image is unlike the training images; None: the model has no
    detector (manifests exported before detectors, ensembles)."""
    device_decode: bool = False
    """JPEG uploads are decoded with their batch on the model's device (``gpu_decode``): the per-request step
    only checks them (``service/device_upload.py``)."""


@dataclass(frozen=True)
class Answer:
    """One image's decoded attributes and its out-of-distribution score (None without a detector)."""

    row: Row
    ood_score: float | None = None


@dataclass(frozen=True)
class Inference:
    """One image's decoded attributes (abstention is the caller's to apply) and where its time went."""

    row: Row
    preprocess_s: float
    queue_wait_s: float
    compute_s: float
    batch_size: int
    ood_score: float | None = None


class ReadyModel(Protocol):
    """A model that serves: what a request holds after its one readiness check."""

    @property
    def info(self) -> ModelInfo: ...

    async def infer(self, preprocess: Callable[[], np.ndarray], timeout_s: float | None) -> Inference:
        """Admit the image (or raise ``QueueFullError`` at once), run ``preprocess()`` off the event loop,
        batch and run it. ``timeout_s`` bounds the time until its batch starts."""
        ...


class Predictor(Protocol):
    def models(self) -> Sequence[ModelInfo]: ...

    def info(self, name: str) -> ModelInfo:
        """Any loaded model, ready or not, by slug or display name; raises :class:`UnknownModelError`
        listing the loaded ones."""
        ...

    def ready_model(self, name: str) -> ReadyModel:
        """Like :meth:`info`, and raises ``ModelNotReadyError`` for a model that failed to load."""
        ...

    async def start(self) -> None: ...

    def begin_drain(self) -> None:
        """A drain started: queued images stop waiting for company. Admitted work still runs (the
        routes refuse new requests), so this refuses nothing."""
        ...

    async def stop(self, drain_timeout_s: float) -> None: ...


def not_ready(info: ModelInfo) -> ModelNotReadyError:
    """The error for a request to a model that failed to load, naming why; the same for every predictor."""
    return ModelNotReadyError(f"model {info.name!r} is not ready: {info.error}")


def find_info(models: Sequence[ModelInfo], name: str) -> ModelInfo:
    """Shared lookup: slugs and display names both work; the error lists what is loaded."""
    for info in models:
        if name in (info.name, info.category.name):
            return info
    try:
        slug = load_taxonomy().category(name).slug
    except TaxonomyError:
        slug = None
    for info in models:
        if info.name == slug:
            return info
    loaded = ", ".join(f"{i.name!r} ({i.category.name})" for i in models) or "none"
    raise UnknownModelError(f"unknown or unloaded category {name!r}; valid categories: {loaded}")
