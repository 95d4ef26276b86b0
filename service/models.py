"""The model repository at serving time: load and check every category's manifest and ONNX file, one
ONNX Runtime session and one batcher per model, and the :class:`Predictor` protocol the routes use
(tests substitute a fake that implements it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from catalog.decoding import AttributePrediction, Decoder, predict_rows
from catalog.manifest import Manifest, ManifestError, list_versions, load_manifest, resolve_version
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import Category, TaxonomyError, load_taxonomy
from service.batcher import Batcher, BatcherConfig, BatcherHooks, Completed
from service.errors import InferenceError, ModelLoadError, ModelNotReadyError, UnknownModelError
from service.metrics import ServiceMetrics
from service.settings import Settings

log = logging.getLogger("service.models")

Row = dict[str, AttributePrediction]


@dataclass(frozen=True)
class ModelInfo:
    """What the API says about one model; the same for the real and the fake predictor."""

    name: str
    category: Category
    version: int
    spec: PreprocessSpec
    input_name: str = "pixel_values"
    input_dtype: str = "float32"
    precision: str = "fp32"
    provider: str = "CPUExecutionProvider"
    ready: bool = True
    error: str | None = None
    versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class Inference:
    """One image's decoded attributes (no abstention applied yet) and how long it took."""

    row: Row
    queue_wait_s: float
    compute_s: float
    batch_size: int


class Predictor(Protocol):
    def models(self) -> Sequence[ModelInfo]: ...

    def info(self, name: str) -> ModelInfo:
        """By slug or display name; raises :class:`UnknownModelError` listing the loaded ones."""
        ...

    async def start(self) -> None: ...

    async def infer(self, name: str, pixels: np.ndarray, timeout_s: float | None = None) -> Inference: ...

    async def infer_alone_if_idle(self, name: str, prepare: Callable[[], np.ndarray]) -> Inference | None:
        """When the model is idle, run ``prepare()`` (the decoding) and the model in one worker call;
        else None, and the caller decodes and calls :meth:`infer`."""
        ...

    def begin_drain(self) -> None:
        """Refuse new work from now on; what is queued still runs."""
        ...

    async def stop(self, drain_timeout_s: float) -> None: ...


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


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One model call at a time per session: parallelism comes from intra-op threads, and more
    # inter-op threads only oversubscribe the cores that decode uploads.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers burn a core after every run; they would steal it from decoding and keep an
    # idle service busy.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


@dataclass
class LoadedModel:
    info: ModelInfo
    manifest: Manifest | None = None
    session: ort.InferenceSession | None = None
    decoder: Decoder | None = None
    batcher: Batcher[np.ndarray, Row] | None = None
    output_names: list[str] = field(default_factory=list)
    dtype: type[np.floating] = np.float32
    top_k: int = 3

    def run_batch(self, pixels: list[np.ndarray]) -> list[Row]:
        """Model call plus decoding, in the batcher's worker thread (both release the event loop)."""
        assert self.session is not None and self.decoder is not None and self.manifest is not None
        batch = np.stack(pixels).astype(self.dtype, copy=False)
        try:
            outputs = self.session.run(self.output_names, {self.info.input_name: batch})
        except Exception as error:
            # Logged with its details; the client learns only that its batch failed.
            log.error("%s: inference failed for a batch of %d: %s", self.info.name, len(pixels), error)
            raise InferenceError(
                f"inference failed for the batch of {len(pixels)} image(s) this request was in; "
                "other requests are unaffected, retry may succeed"
            ) from error
        logits = {spec.name: np.asarray(out, dtype=np.float32)
                  for spec, out in zip(self.manifest.attributes, outputs, strict=True)}
        return predict_rows(self.decoder, logits, threshold=0.0, top_k=self.top_k)


def discover(repository: Path) -> list[str]:
    """Model folders (those with numbered versions) in the repository, sorted."""
    return sorted(p.name for p in repository.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and list_versions(repository, p.name))


class OnnxPredictor:
    """The real predictor: ONNX Runtime sessions over a model repository."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._models: dict[str, LoadedModel] = {}
        self._draining = False

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
            except Exception as error:
                message = f"{slug}: {error}"
                if not settings.allow_partial_start:
                    raise ModelLoadError(message) from error
                log.error("model %s not ready: %s", slug, message)
                failures.append(message)
                model = self._broken(slug, message)
            self._models[model.info.name] = model
            self._metrics.model_ready.labels(model.info.name).set(1 if model.info.ready else 0)
        if failures and len(failures) == len(slugs):
            raise ModelLoadError("every model failed to load: " + "; ".join(failures))

    def _broken(self, slug: str, message: str) -> LoadedModel:
        try:
            category = load_taxonomy().category(slug)
        except TaxonomyError:
            category = Category(name=slug, slug=slug, attributes=(), train_rows=0)
        info = ModelInfo(name=slug, category=category, version=0, spec=PreprocessSpec(), ready=False,
                         error=message, versions=tuple(list_versions(self._settings.repository, slug)))
        return LoadedModel(info=info)

    def _load_one(self, slug: str) -> LoadedModel:
        settings = self._settings
        folder = resolve_version(settings.repository, slug, settings.versions.get(slug))
        manifest = load_manifest(folder)  # validates schema, taxonomy and sha256
        if manifest.slug != slug:
            raise ManifestError(f"{folder}: manifest is for {manifest.slug!r}, not {slug!r}")
        session = ort.InferenceSession(str(folder / manifest.model_file),
                                       session_options(settings.resolved_session_threads),
                                       providers=settings.providers)
        inputs = {i.name: i for i in session.get_inputs()}
        if manifest.input.name not in inputs:
            raise ManifestError(f"{folder}: model has inputs {list(inputs)}, manifest says {manifest.input.name!r}")
        outputs = {o.name for o in session.get_outputs()}
        missing = [name for name in manifest.output_names if name not in outputs]
        if missing:
            raise ManifestError(f"{folder}: model lacks outputs {missing}; it has {sorted(outputs)}")
        spec = manifest.preprocess_spec()
        info = ModelInfo(
            name=slug, category=manifest.taxonomy_category(), version=manifest.version, spec=spec,
            input_name=manifest.input.name, input_dtype=manifest.input.dtype, precision=manifest.precision,
            provider=session.get_providers()[0], versions=tuple(list_versions(settings.repository, slug)),
        )
        model = LoadedModel(info=info, manifest=manifest, session=session, decoder=manifest.decoder(),
                            output_names=manifest.output_names,
                            dtype=np.float16 if manifest.input.dtype == "float16" else np.float32,
                            top_k=settings.top_k)
        if settings.warmup:
            try:
                model.run_batch([np.zeros(spec.input_shape, dtype=np.float32)])
            except InferenceError as error:
                raise ModelLoadError(f"warm-up inference failed: {error.__cause__}") from error
        batch_dim = manifest.input.shape[0] if manifest.input.shape else None
        max_batch = settings.max_batch_size
        if isinstance(batch_dim, int):  # a model exported with a fixed batch size caps ours
            max_batch = min(max_batch, batch_dim)
        config = BatcherConfig(max_batch_size=max_batch, max_delay_s=settings.max_queue_delay_s,
                               max_queue_size=settings.max_queue_size,
                               max_in_flight=settings.max_batches_in_flight,
                               timeout_s=settings.request_timeout_s)
        model.batcher = Batcher(model.run_batch, config, name=slug, hooks=self._hooks(slug))
        self._metrics.model_info.labels(slug, str(manifest.version), manifest.precision, info.provider).set(1)
        log.info("loaded %s v%d from %s (%s, %s)", slug, manifest.version, folder, manifest.precision, info.provider)
        return model

    def _hooks(self, slug: str) -> BatcherHooks:
        m = self._metrics

        def on_batch(size: int, run_s: float) -> None:
            m.batch_size.labels(slug).observe(size)
            m.compute_seconds.labels(slug).observe(run_s)
            m.images_total.labels(slug).inc(size)

        return BatcherHooks(on_queue_depth=m.queue_depth.labels(slug).set, on_batch=on_batch)

    # -- the Predictor protocol ------------------------------------------------------------------

    def models(self) -> Sequence[ModelInfo]:
        return [m.info for m in self._models.values()]

    def info(self, name: str) -> ModelInfo:
        return find_info(self.models(), name)

    async def start(self) -> None:
        if not self._models:
            await asyncio.to_thread(self.load)
        for model in self._models.values():
            if model.batcher is not None:
                model.batcher.start()

    def _batcher(self, name: str) -> tuple[str, Batcher[np.ndarray, Row]]:
        # No drain check here: the routes refuse new requests once a drain starts, and an admitted
        # request still runs (the batchers accept work until the lifespan stops them).
        model = self._models[self.info(name).name]
        if not model.info.ready or model.batcher is None:
            raise ModelNotReadyError(f"model {model.info.name!r} is not ready: {model.info.error}")
        return model.info.name, model.batcher

    def _inference(self, slug: str, done: Completed[Row]) -> Inference:
        self._metrics.queue_wait_seconds.labels(slug).observe(done.queue_wait_s)
        return Inference(done.value, done.queue_wait_s, done.run_s, done.batch_size)

    async def infer(self, name: str, pixels: np.ndarray, timeout_s: float | None = None) -> Inference:
        slug, batcher = self._batcher(name)
        return self._inference(slug, await batcher.submit(pixels, timeout_s=timeout_s))

    async def infer_alone_if_idle(self, name: str, prepare: Callable[[], np.ndarray]) -> Inference | None:
        slug, batcher = self._batcher(name)
        done = await batcher.run_alone_if_idle(prepare)
        return None if done is None else self._inference(slug, done)

    def begin_drain(self) -> None:
        self._draining = True
        for name, model in self._models.items():
            self._metrics.model_ready.labels(name).set(0)
            if model.batcher is not None:
                model.batcher.flush()  # queued images need not wait for company any more

    async def stop(self, drain_timeout_s: float) -> None:
        self.begin_drain()
        await asyncio.gather(*(m.batcher.stop(drain_timeout_s) for m in self._models.values() if m.batcher))
