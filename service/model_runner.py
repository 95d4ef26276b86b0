"""What every execution backend shares: a model repository loaded into one :class:`ModelRunner` (decoder,
batcher, metrics hooks) per category, whatever runs the model. A backend supplies only :class:`Runtime`:
"run a stacked batch -> logits by attribute and the OOD score". ``service/onnx_predictor.py`` (ONNX
Runtime, the default) and ``service/torch_predictor.py`` (PyTorch) subclass :class:`RepositoryPredictor`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catalog.decoding import predict_rows
from catalog.manifest import Manifest, ManifestError, list_versions, load_manifest, resolve_version
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import Category, TaxonomyError, load_taxonomy
from service.batching import Batcher, BatcherConfig, BatcherHooks
from service.errors import InferenceError, InferenceUnavailableError, ModelLoadError
from service.gather_choice import measured_gather
from service.metrics import ServiceMetrics
from service.predictor import Answer, Inference, ModelInfo, find_info, not_ready
from service.session_layout import batches_in_flight, on_preprocess_threads
from service.settings import Settings

log = logging.getLogger("service.model_runner")

Outputs = tuple[dict[str, np.ndarray], np.ndarray | None]
"""One model call's result: float32 logits by attribute name, and each image's OOD score (None without a
detector)."""
Prepared = tuple[Any, dict[int, BaseException]]
"""A batch ready for ``Runtime.run`` (an array or a device tensor), and the errors of the images left out."""


@dataclass(frozen=True)
class Runtime:
    """A loaded model as a backend runs it: ``run`` takes a stacked float32 ``(N, 3, H, W)`` batch."""

    run: Callable[[Any, int], Outputs]
    """``run(batch, admitted)``: ``admitted`` is how many images the model has taken in (queued, preparing or
    running), which a load-aware runtime chooses by (ONNX Runtime's spinning session: only for a lone batch)."""
    provider: str
    """What runs it, as the API and the ``model_info`` metric report it (``CPUExecutionProvider``,
    ``torch-cuda``, ...)."""
    precision: str
    """The arithmetic it runs in (the manifest's for ONNX; the chosen dtype for PyTorch)."""
    prepare: Callable[[list[np.ndarray]], Prepared] = lambda items: (np.stack(items), {})
    """The batcher's per-image inputs -> ``run``'s batch (of those that succeed) and the errors of those that
    fail, by index: stacking, or decoding on the device (``gpu_decode``)."""
    device_decode: bool = False
    """Whether JPEG uploads reach ``prepare`` as their bytes (``service/device_upload.py``)."""
    holds_model: bool = True
    """Whether this process holds the model (its sessions or module): False for a front end that sends its
    batches to the inference process (``shared_inference``)."""


def discover(repository: Path) -> list[str]:
    """Model folders (those with numbered versions) in the repository, sorted."""
    return sorted(p.name for p in repository.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and list_versions(repository, p.name))


def batcher_config(settings: Settings, manifest: Manifest, provider: str) -> BatcherConfig:
    batch_dim = manifest.input.shape[0] if manifest.input.shape else None
    max_batch = settings.max_batch_size
    if isinstance(batch_dim, int):  # a model exported with a fixed batch size caps ours
        max_batch = min(max_batch, batch_dim)
    on_threads = on_preprocess_threads(settings, provider)
    in_flight = batches_in_flight(settings, provider)
    threads = settings.resolved_preprocess_threads
    if on_threads and in_flight > threads:  # only a set max_batches_in_flight can be
        raise ModelLoadError(
            f"max_batches_in_flight={in_flight} cannot apply: batches run on the {threads} preprocessing thread(s) "
            "(batches_on_preprocess_threads); raise PREPROCESS_THREADS, lower MAX_BATCHES_IN_FLIGHT, or set "
            "BATCHES_ON_PREPROCESS_THREADS=false")
    gather = settings.gather_batch_size
    if gather is not None and gather > 1 and not on_threads:
        raise ModelLoadError(f"gather_batch_size={gather} cannot apply: batches do not run on the preprocessing "
                             "threads here (a GPU, SHARED_INFERENCE, a batching delay or "
                             "BATCHES_ON_PREPROCESS_THREADS=false); unset GATHER_BATCH_SIZE")
    return BatcherConfig(max_batch_size=max_batch, max_delay_s=settings.max_queue_delay_s,
                         max_queue_size=settings.max_queue_size, max_in_flight=in_flight,
                         timeout_s=settings.request_timeout_s, run_on_preparing_threads=on_threads,
                         gather_size=min(gather or 1, max_batch))


class ModelRunner:
    """One loaded model: its runtime, decoder and batcher (a :class:`~service.predictor.ReadyModel`)."""

    def __init__(self, info: ModelInfo, manifest: Manifest, runtime: Runtime, top_k: int,
                 batching: BatcherConfig, hooks: BatcherHooks, preprocess_pool: Executor) -> None:
        self.info = info
        self.runtime = runtime
        self._decoder = manifest.decoder()
        self._top_k = top_k
        self.batcher: Batcher[np.ndarray, Answer] = Batcher(self.run_batch, batching, name=info.name, hooks=hooks,
                                                         prepare_executor=preprocess_pool)

    def run_batch(self, pixels: list[np.ndarray]) -> list[Answer | BaseException]:
        """Model call plus decoding, in the batcher's worker thread (both release the event loop). An image the
        runtime could not prepare fails alone."""
        try:
            batch, failed = self.runtime.prepare(pixels)
            answers = iter(self._answers(batch) if len(batch) else [])
        except InferenceUnavailableError:
            raise  # the batch never ran: 503, retry may succeed (logged where it was found)
        except Exception as error:
            # Logged with its details; the client learns only that its batch failed.
            log.error("%s: inference failed for a batch of %d: %s", self.info.name, len(pixels), error)
            raise InferenceError(
                f"inference failed for the batch of {len(pixels)} image(s) this request was in; "
                "other requests are unaffected, retry may succeed"
            ) from error
        return [failed[i] if i in failed else next(answers) for i in range(len(pixels))]

    def _answers(self, batch: Any) -> list[Answer]:
        # ``admitted`` is read from the batcher's worker thread while the event loop may change it: a request
        # admitted meanwhile at worst meets one spinning call.
        logits, ood = self.runtime.run(batch, self.batcher.admitted)
        rows = predict_rows(self._decoder, logits, top_k=self._top_k)
        if ood is None:
            return [Answer(row) for row in rows]
        return [Answer(row, float(score)) for row, score in zip(rows, ood, strict=True)]

    async def infer(self, preprocess: Callable[[], np.ndarray], timeout_s: float | None) -> Inference:
        done = await self.batcher.submit(preprocess, timeout_s=timeout_s)
        return Inference(done.value.row, done.prepare_s, done.queue_wait_s, done.run_s, done.batch_size,
                         done.value.ood_score)


class RepositoryPredictor:
    """A predictor over a model repository (the :class:`~service.predictor.Predictor` protocol); subclasses
    say how one version folder becomes a :class:`Runtime` (:meth:`open_runtime`)."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._infos: dict[str, ModelInfo] = {}
        """Every configured model, in load order; the broken ones have ``ready`` False."""
        self._models: dict[str, ModelRunner] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Shared by every model: preprocessing is per upload (Pillow releases the GIL), not per model.
        self._preprocess_pool = ThreadPoolExecutor(settings.resolved_preprocess_threads,
                                                   thread_name_prefix="preprocess")

    def open_runtime(self, folder: Path, manifest: Manifest) -> Runtime:
        """Load and check the model of one version folder; raises naming what is wrong."""
        raise NotImplementedError

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Load every configured category; raises :class:`ModelLoadError` unless partial start-up is
        allowed, in which case the broken model reports not ready."""
        settings = self._settings
        slugs = settings.categories or discover(settings.repository)
        if not slugs:
            raise ModelLoadError(f"no models found in repository {str(settings.repository)!r}")
        failures: list[str] = []
        for slug in slugs:
            try:
                model = self._load_one(slug)
                self._models[slug], info = model, model.info
            except Exception as error:
                message = f"{slug}: {error}"
                if not settings.allow_partial_start:
                    raise ModelLoadError(message) from error
                log.error("model %s not ready: %s", slug, message)
                failures.append(message)
                info = self._broken(slug, message)
            self._infos[slug] = info
            self._metrics.model_ready.labels(slug).set(1 if info.ready else 0)
        if failures and len(failures) == len(slugs):
            raise ModelLoadError("every model failed to load: " + "; ".join(failures))

    def _broken(self, slug: str, message: str) -> ModelInfo:
        try:
            category = load_taxonomy().category(slug)
        except TaxonomyError:
            category = Category(name=slug, slug=slug, attributes=(), train_rows=0)
        return ModelInfo(name=slug, category=category, version=0, spec=PreprocessSpec(), ready=False,
                         error=message, versions=tuple(list_versions(self._settings.repository, slug)))

    def _load_one(self, slug: str) -> ModelRunner:
        settings = self._settings
        folder = resolve_version(settings.repository, slug, settings.versions.get(slug))
        manifest = load_manifest(folder)  # validates schema, taxonomy and sha256
        if manifest.slug != slug:
            raise ManifestError(f"{folder}: manifest is for {manifest.slug!r}, not {slug!r}")
        runtime = self.open_runtime(folder, manifest)
        info = ModelInfo(
            name=slug, category=manifest.taxonomy_category(), version=manifest.version,
            spec=manifest.preprocess_spec(), precision=runtime.precision, provider=runtime.provider,
            versions=tuple(list_versions(settings.repository, slug)),
            ood_threshold=manifest.ood.threshold if manifest.ood else None, device_decode=runtime.device_decode,
        )
        batching = batcher_config(settings, manifest, info.provider)
        if batching.run_on_preparing_threads and settings.gather_batch_size is None:
            batching.gather_size = self._measured_gather(slug, runtime, info, batching.max_batch_size)
        model = ModelRunner(info, manifest, runtime, settings.top_k, batching, self._hooks(slug), self._preprocess_pool)
        if settings.warmup:
            try:
                model.run_batch([np.zeros(info.spec.input_shape, dtype=np.float32)])
            except InferenceError as error:
                raise ModelLoadError(f"warm-up inference failed: {error.__cause__}") from error
        self._metrics.model_info.labels(slug, str(manifest.version), info.precision, info.provider).set(1)
        self._metrics.model_copies.labels(slug).set(1 if runtime.holds_model else 0)
        if manifest.ood is not None:  # a flagged share of 0 from the start, not "no data"
            self._metrics.ood_scored_total.labels(slug)
            self._metrics.ood_flagged_total.labels(slug)
        log.info("loaded %s v%d from %s (%s, %s%s)", slug, manifest.version, folder, info.precision, info.provider,
                 "" if runtime.holds_model else ", run by the inference process")
        return model

    @staticmethod
    def _measured_gather(slug: str, runtime: Runtime, info: ModelInfo, max_batch_size: int) -> int:
        # admitted above the batch: the session every batch under load runs on, not a lone one's.
        size, why = measured_gather(lambda batch: runtime.run(batch, len(batch) + 1), info.spec.input_shape,
                                    max_batch_size)
        log.info("%s: %s under load (%s)", slug, f"gathers up to {size} uploads per batch" if size > 1
                 else "runs each upload as it is preprocessed", why)
        return size

    def _hooks(self, slug: str) -> BatcherHooks:
        m = self._metrics

        def on_load(queued: int, admitted: int) -> None:
            m.queue_depth.labels(slug).set(queued)
            m.admitted.labels(slug).set(admitted)

        def on_batch(size: int, run_s: float) -> None:
            m.batch_size.labels(slug).observe(size)
            m.compute_seconds.labels(slug).observe(run_s)
            m.images_total.labels(slug).inc(size)

        return BatcherHooks(on_load=on_load, on_batch=on_batch)

    # -- the Predictor protocol ------------------------------------------------------------------

    def models(self) -> Sequence[ModelInfo]:
        return list(self._infos.values())

    def info(self, name: str) -> ModelInfo:
        return find_info(self.models(), name)

    def ready_model(self, name: str) -> ModelRunner:
        info = self.info(name)
        model = self._models.get(info.name)
        if model is None:
            raise not_ready(info)
        return model

    async def start(self) -> None:
        if not self._infos:
            await asyncio.to_thread(self.load)
        self._loop = asyncio.get_running_loop()
        for model in self._models.values():
            model.batcher.start()

    def begin_drain(self) -> None:
        """Safe in a signal handler: the metrics are set from the event loop, because prometheus_client's
        lock (one for every metric in multiprocess mode) may be held by the very code the signal interrupted,
        which deadlocked a worker's drain."""
        for model in self._models.values():
            model.batcher.flush()  # queued images need not wait for company any more
        if self._loop is None:
            self._mark_draining()
        else:
            self._loop.call_soon_threadsafe(self._mark_draining)

    def _mark_draining(self) -> None:
        for name in self._models:
            self._metrics.model_ready.labels(name).set(0)

    async def stop(self, drain_timeout_s: float) -> None:
        self.begin_drain()
        await asyncio.gather(*(m.batcher.stop(drain_timeout_s) for m in self._models.values()))
        self._preprocess_pool.shutdown(wait=False, cancel_futures=True)
