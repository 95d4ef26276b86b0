"""One image through the service: check, decode (thread pool), batch and infer, answer. Shared by
``/predict``, ``/batch`` and the v2 infer route, and independent of HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from catalog.taxonomy import Category
from service import images
from service.batcher import QueueFullError
from service.errors import ModelNotReadyError, ShuttingDownError
from service.metrics import ServiceMetrics
from service.models import Inference, ModelInfo, Predictor
from service.postprocess import build_response, parse_declared
from service.schemas import AttributeResult, Conflict, PredictResponse, Timings
from service.settings import Settings


@dataclass
class ServiceState:
    """Everything a request needs, held on ``app.state.service``; made by ``create_app``."""

    settings: Settings
    predictor: Predictor
    metrics: ServiceMetrics
    executor: ThreadPoolExecutor
    started: bool = False
    draining: bool = False
    limits: images.ImageLimits = field(init=False)
    admitted: dict[str, int] = field(default_factory=dict)
    """Images per model admitted and not yet answered (decoding, queued or running)."""
    drain_deadline: float | None = None
    """``time.monotonic()`` by which a started drain must be over."""

    def __post_init__(self) -> None:
        self.limits = images.ImageLimits(self.settings.max_upload_bytes, self.settings.max_image_pixels)

    @property
    def max_admitted(self) -> int:
        """Per model: a full queue plus the batches running. Requests past it are refused *before* their
        upload is decoded, so overload costs little and memory stays bounded."""
        s = self.settings
        return s.max_queue_size + s.max_batch_size * s.max_batches_in_flight

    @property
    def ready(self) -> bool:
        return self.started and not self.draining and any(m.ready for m in self.predictor.models())

    def begin_drain(self) -> None:
        """Readiness turns false and new work is refused at once; admitted work still finishes, by
        ``drain_deadline`` (the shutdown delay plus the drain timeout from the first call)."""
        if self.drain_deadline is None:
            self.drain_deadline = (time.monotonic() + self.settings.shutdown_delay_s
                                   + self.settings.drain_timeout_s)
        self.draining = True
        self.predictor.begin_drain()

    def drain_left_s(self) -> float:
        if self.drain_deadline is None:
            return self.settings.drain_timeout_s
        return max(0.0, self.drain_deadline - time.monotonic())

    def check_accepting(self) -> None:
        if self.draining:
            raise ShuttingDownError("the server is shutting down; retry on another replica")

    def ready_model(self, name: str) -> ModelInfo:
        info = self.predictor.info(name)
        if not info.ready:
            raise ModelNotReadyError(f"model {info.name!r} is not ready: {info.error}")
        return info

    async def decode(self, info: ModelInfo, data: bytes) -> tuple[np.ndarray, float]:
        """Decode and resize in the thread pool (Pillow releases the GIL); returns the tensor and seconds."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        pixels = await loop.run_in_executor(self.executor, images.decode, data, info.spec, self.limits)
        seconds = time.perf_counter() - started
        self.metrics.preprocess_seconds.labels(info.name).observe(seconds)
        return pixels, seconds

    def remaining_s(self, started: float) -> float:
        """What is left of the request's deadline, which runs from its arrival (not its queueing)."""
        return max(0.001, self.settings.request_timeout_s - (time.perf_counter() - started))

    def record(self, info: ModelInfo, attributes: Mapping[str, AttributeResult],
               conflicts: Sequence[Conflict] = ()) -> None:
        """Counts one image's predicted values (for drift), abstentions and conflicts, whatever route it
        came by."""
        m = self.metrics
        for name, result in attributes.items():
            m.predictions_total.labels(info.name, name, result.decoded_value).inc()
            if result.abstained:
                m.abstentions_total.labels(info.name, name).inc()
        for conflict in conflicts:
            m.conflicts_total.labels(info.name, conflict.attribute).inc()


def resolve_threshold(state: ServiceState, threshold: float | None) -> float:
    return state.settings.threshold if threshold is None else threshold


async def infer_image(state: ServiceState, info: ModelInfo, data: bytes, started: float) -> tuple[Inference, float]:
    """Admit (or refuse with 503 at once), decode, then wait for the image's batch."""
    admitted = state.admitted.get(info.name, 0)
    if admitted >= state.max_admitted:
        raise QueueFullError(info.name, admitted, retry_after_s=1.0)
    state.admitted[info.name] = admitted + 1
    state.metrics.admitted.labels(info.name).set(admitted + 1)
    try:
        inference, preprocess_s = await _alone_if_idle(state, info, data)
        if inference is None:
            pixels, preprocess_s = await state.decode(info, data)
            inference = await state.predictor.infer(info.name, pixels, state.remaining_s(started))
    finally:
        state.admitted[info.name] -= 1
        state.metrics.admitted.labels(info.name).set(state.admitted[info.name])
    return inference, preprocess_s


async def _alone_if_idle(state: ServiceState, info: ModelInfo, data: bytes) -> tuple[Inference | None, float]:
    """Decode and infer in one worker call when the model is idle (``decode_alone_when_idle``)."""
    enabled = state.settings.decode_alone_when_idle
    if not (info.provider == "CPUExecutionProvider" if enabled is None else enabled):
        return None, 0.0
    seconds: list[float] = []

    def prepare() -> np.ndarray:
        started = time.perf_counter()
        pixels = images.decode(data, info.spec, state.limits)
        seconds.append(time.perf_counter() - started)
        return pixels

    inference = await state.predictor.infer_alone_if_idle(info.name, prepare)
    if inference is None:
        return None, 0.0
    state.metrics.preprocess_seconds.labels(info.name).observe(seconds[0])
    return inference, seconds[0]


async def predict_image(state: ServiceState, category: str, data: bytes, *, threshold: float | None = None,
                        declared: str | None = None) -> PredictResponse:
    """The whole ``/predict`` flow for one image; raises service errors mapped to HTTP by the app. The
    route checks ``state.check_accepting()`` first: once admitted, a request runs even if a drain starts."""
    started = time.perf_counter()
    info = state.ready_model(category)
    stated = parse_declared(declared, info.category)  # cheap checks before any decoding work
    inference, preprocess_s = await infer_image(state, info, data, started)
    response = respond(state, info, info.category, inference, preprocess_s, started,
                       resolve_threshold(state, threshold), stated)
    return response


def respond(state: ServiceState, info: ModelInfo, category: Category, inference: Inference, preprocess_s: float,
            started: float, threshold: float, declared: dict[str, str]) -> PredictResponse:
    timings = Timings(
        preprocess_ms=preprocess_s * 1e3, queue_ms=inference.queue_wait_s * 1e3,
        compute_ms=inference.compute_s * 1e3, total_ms=(time.perf_counter() - started) * 1e3,
        batch_size=inference.batch_size,
    )
    response = build_response(model=info.name, version=info.version, category=category, row=inference.row,
                              threshold=threshold, declared=declared,
                              conflict_threshold=state.settings.conflict_threshold, timings=timings)
    state.record(info, response.attributes, response.conflicts)
    return response
