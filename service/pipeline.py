"""One image through the service: the model's one readiness check, then preprocessing and inference
(admitted, batched and run by the model's batcher), then the answer. Shared by ``/predict``, ``/batch``
and the v2 infer route, and independent of HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import partial

from catalog.taxonomy import Category
from service import device_upload, images
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics
from service.postprocess import build_response, out_of_distribution, parse_declared
from service.predictor import Inference, Predictor, ReadyModel
from service.preprocess_memory import PreprocessMemory
from service.schemas import CategoryCheck, OutOfDistribution, PredictResponse, Timings
from service.settings import Settings
from service.tracing import Tracing


@dataclass
class ServiceState:
    """What every request reads, held on ``app.state.service``; made by ``create_app``."""

    settings: Settings
    predictor: Predictor
    metrics: ServiceMetrics
    lifecycle: Lifecycle = field(init=False)
    limits: images.ImageLimits = field(init=False)
    tracing: Tracing = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.lifecycle = Lifecycle(drain_budget_s=s.shutdown_delay_s + s.drain_timeout_s)
        self.limits = images.ImageLimits(s.max_upload_bytes, s.max_image_pixels,
                                         PreprocessMemory(s.preprocess_memory_bytes))
        self.tracing = Tracing(s.tracing)

    @property
    def ready(self) -> bool:
        return self.lifecycle.accepting and any(m.ready for m in self.predictor.models())

    def begin_drain(self) -> None:
        self.lifecycle.begin_drain()
        self.predictor.begin_drain()

    def threshold(self, requested: float | None) -> float:
        return self.settings.threshold if requested is None else requested

    def ood_action(self, requested: str | None) -> str:
        return self.settings.ood_action if requested is None else requested


log = logging.getLogger("service.pipeline")


async def infer_upload(state: ServiceState, model: ReadyModel, data: bytes, started: float) -> Inference:
    """Admit (or refuse with 503 at once), preprocess, then wait for the image's batch. The deadline
    runs from the request's arrival (``started``), not from its queueing."""
    remaining_s = state.settings.request_timeout_s - (time.perf_counter() - started)
    step = device_upload.upload_step if model.info.device_decode else images.preprocess_upload
    inference = await model.infer(partial(step, data, model.info.spec, state.limits), remaining_s)
    state.metrics.observe_timings(model.info.name, inference.preprocess_s, inference.queue_wait_s)
    state.tracing.inference(model.info.name, inference)
    return inference


async def predict_image(state: ServiceState, category: str, data: bytes, *, threshold: float | None = None,
                        declared: str | None = None, ood_action: str | None = None) -> PredictResponse:
    """The whole ``/predict`` flow for one image; raises service errors mapped to HTTP by the app. The
    route checks ``lifecycle.check_accepting()`` first: once admitted, a request runs even if a drain
    starts."""
    started = time.perf_counter()
    model = state.predictor.ready_model(category)
    stated = parse_declared(declared, model.info.category)  # cheap checks before any preprocessing
    inference = await infer_upload(state, model, data, started)
    ood = out_of_distribution(inference.ood_score, model.info.ood_threshold)
    check = await category_check(state, model, ood, data, started)
    return respond(state, model, inference, started, state.threshold(threshold), stated,
                   state.ood_action(ood_action), ood, check)


async def category_check(state: ServiceState, asked: ReadyModel, ood: OutOfDistribution | None, data: bytes,
                         started: float) -> CategoryCheck | None:
    """When the image is flagged (or ``category_check=always``), its score under every other loaded model
    with a detector, each divided by that model's threshold: at most one call per loaded model. A model that
    cannot answer (not ready, queue full) is left out of ``scores``, and the check never fails the request."""
    mode = state.settings.category_check
    if ood is None or mode == "off" or (mode == "flagged" and not ood.flagged) or ood.threshold <= 0:
        return None
    others = [m for m in state.predictor.models() if m.ready and m.name != asked.info.name
              and m.ood_threshold is not None and m.ood_threshold > 0]

    async def score(name: str) -> Inference:
        return await infer_upload(state, state.predictor.ready_model(name), data, started)

    results = await asyncio.gather(*(score(m.name) for m in others), return_exceptions=True)
    scores = {asked.info.name: ood.score / ood.threshold}
    for info, result in zip(others, results, strict=True):
        if isinstance(result, Inference) and result.ood_score is not None and info.ood_threshold:
            scores[info.name] = result.ood_score / info.ood_threshold
        elif isinstance(result, BaseException):
            log.warning("category check: %s could not score the image: %s", info.name, result)
    best = min(scores, key=lambda name: scores[name])
    return CategoryCheck(asked=asked.info.name, best_fit=best if scores[best] <= 1 else None,
                         scores={name: round(value, 4) for name, value in scores.items()})


def respond(state: ServiceState, model: ReadyModel, inference: Inference, started: float, threshold: float,
            declared: dict[str, str], ood_action: str = "abstain", ood: OutOfDistribution | None = None,
            check: CategoryCheck | None = None) -> PredictResponse:
    info = model.info
    timings = Timings(
        preprocess_ms=inference.preprocess_s * 1e3, queue_ms=inference.queue_wait_s * 1e3,
        compute_ms=inference.compute_s * 1e3, total_ms=(time.perf_counter() - started) * 1e3,
        batch_size=inference.batch_size,
    )
    category: Category = info.category
    response = build_response(model=info.name, version=info.version, category=category, row=inference.row,
                              threshold=threshold, declared=declared,
                              conflict_threshold=state.settings.conflict_threshold, timings=timings,
                              ood=ood, ood_action=ood_action, category_check=check)
    state.metrics.count_answer(info.name, response.attributes, response.conflicts, ood)
    return response
