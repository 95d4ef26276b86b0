"""The model repository served with ONNX Runtime: load and check every category's manifest and ONNX
file, then its sessions and one batcher per model (the :class:`~service.predictor.Predictor` protocol)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from catalog.decoding import predict_rows
from catalog.manifest import Manifest, ManifestError, list_versions, load_manifest, resolve_version
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import Category, TaxonomyError, load_taxonomy
from service.batching import Batcher, BatcherConfig, BatcherHooks
from service.errors import InferenceError, ModelLoadError
from service.metrics import ServiceMetrics
from service.predictor import Answer, Inference, ModelInfo, find_info, not_ready
from service.session_choice import Sessions
from service.settings import Settings

log = logging.getLogger("service.onnx_predictor")


def session_options(threads: int, *, spinning: bool = False) -> ort.SessionOptions:
    """``spinning``: the intra-op threads spin between the parallel parts of a call instead of sleeping,
    and stop spinning when the call returns (see :mod:`service.session_choice`)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One model call at a time per session: parallelism comes from intra-op threads, and more
    # inter-op threads only oversubscribe the cores that preprocess uploads.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers burn a core for a while after every run; they would steal it from preprocessing
    # and keep an idle service busy. Spinning sessions stop it when the call returns.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def open_sessions(model_file: Path, settings: Settings) -> Sessions[ort.InferenceSession]:
    """The sleeping session, and the spinning one as ``spin_when_idle`` says (unset: on the CPU provider
    with at least 2 intra-op threads, the only case where threads can spin)."""
    threads = settings.resolved_session_threads

    def open_session(spinning: bool) -> ort.InferenceSession:
        return ort.InferenceSession(str(model_file), session_options(threads, spinning=spinning),
                                    providers=settings.providers)

    sleeping = open_session(False)
    spin = settings.spin_when_idle
    if spin is None:
        spin = threads > 1 and sleeping.get_providers()[0] == "CPUExecutionProvider"
    elif spin and threads < 2:
        raise ValueError(f"spin_when_idle=True needs at least 2 session threads to spin, and session_threads "
                         f"resolves to {threads}: raise CATALOG_SERVICE_SESSION_THREADS or unset the former")
    return Sessions(sleeping, open_session(True) if spin else None)


def session_logits(session: ort.InferenceSession, manifest: Manifest, batch: np.ndarray) -> dict[str, np.ndarray]:
    """One model call on a stacked ``(N, 3, H, W)`` batch: the logits of every attribute, by attribute name
    (what :func:`catalog.decoding.predict_rows` decodes). Shared by the service and the backfill."""
    return session_outputs(session, manifest, batch)[0]


def session_outputs(session: ort.InferenceSession, manifest: Manifest,
                    batch: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The logits of every attribute and, when the model has a detector, each image's OOD score (the same
    call: one more output of the graph)."""
    names = [*manifest.output_names, manifest.ood.output] if manifest.ood else manifest.output_names
    outputs = session.run(names, {manifest.input.name: batch})
    logits = {spec.name: np.asarray(out, dtype=np.float32) for spec, out in zip(manifest.attributes, outputs,
                                                                                 strict=False)}
    return logits, np.asarray(outputs[-1], dtype=np.float32) if manifest.ood else None


def discover(repository: Path) -> list[str]:
    """Model folders (those with numbered versions) in the repository, sorted."""
    return sorted(p.name for p in repository.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and list_versions(repository, p.name))


def batcher_config(settings: Settings, manifest: Manifest, provider: str) -> BatcherConfig:
    batch_dim = manifest.input.shape[0] if manifest.input.shape else None
    max_batch = settings.max_batch_size
    if isinstance(batch_dim, int):  # a model exported with a fixed batch size caps ours
        max_batch = min(max_batch, batch_dim)
    alone = settings.preprocess_alone_when_idle
    return BatcherConfig(max_batch_size=max_batch, max_delay_s=settings.max_queue_delay_s,
                         max_queue_size=settings.max_queue_size, max_in_flight=settings.max_batches_in_flight,
                         timeout_s=settings.request_timeout_s,
                         run_alone_when_idle=provider == "CPUExecutionProvider" if alone is None else alone)


class OnnxModel:
    """One loaded model: its sessions, decoder and batcher (a :class:`~service.predictor.ReadyModel`)."""

    def __init__(self, info: ModelInfo, manifest: Manifest, sessions: Sessions[ort.InferenceSession], top_k: int,
                 batching: BatcherConfig, hooks: BatcherHooks, preprocess_pool: Executor) -> None:
        self.info = info
        self._manifest = manifest
        self.sessions = sessions
        self._decoder = manifest.decoder()
        self._top_k = top_k
        self.batcher: Batcher[np.ndarray, Answer] = Batcher(self.run_batch, batching, name=info.name, hooks=hooks,
                                                         prepare_executor=preprocess_pool)

    def run_batch(self, pixels: list[np.ndarray]) -> list[Answer]:
        """Model call plus decoding, in the batcher's worker thread (both release the event loop)."""
        try:
            batch = np.stack(pixels)
            # ``admitted`` is read from this worker thread while the event loop may change it: a request
            # admitted meanwhile at worst meets one spinning call.
            logits, ood = self.sessions.run(len(pixels), self.batcher.admitted,
                                            lambda session: session_outputs(session, self._manifest, batch))
        except Exception as error:
            raise self._failed(len(pixels), error) from error
        return self._answers(logits, ood)

    def warm_up(self) -> None:
        """One dummy image through every session, so that no first request is slow."""
        batch = np.zeros((1, *self.info.spec.input_shape), dtype=np.float32)
        for session in self.sessions.every:
            try:
                self._answers(*session_outputs(session, self._manifest, batch))
            except Exception as error:
                raise self._failed(1, error) from error

    def _failed(self, size: int, error: Exception) -> InferenceError:
        # Logged with its details; the client learns only that its batch failed.
        log.error("%s: inference failed for a batch of %d: %s", self.info.name, size, error)
        return InferenceError(f"inference failed for the batch of {size} image(s) this request was in; "
                              "other requests are unaffected, retry may succeed")

    def _answers(self, logits: dict[str, np.ndarray], ood: np.ndarray | None) -> list[Answer]:
        rows = predict_rows(self._decoder, logits, top_k=self._top_k)
        if ood is None:
            return [Answer(row) for row in rows]
        return [Answer(row, float(score)) for row, score in zip(rows, ood, strict=True)]

    async def infer(self, preprocess: Callable[[], np.ndarray], timeout_s: float | None, *,
                    cheap: bool = False) -> Inference:
        done = await self.batcher.submit(preprocess, timeout_s=timeout_s, may_run_alone=cheap)
        return Inference(done.value.row, done.prepare_s, done.queue_wait_s, done.run_s, done.batch_size,
                         done.value.ood_score)


class OnnxPredictor:
    """The real predictor: ONNX Runtime sessions over a model repository."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._infos: dict[str, ModelInfo] = {}
        """Every configured model, in load order; the broken ones have ``ready`` False."""
        self._models: dict[str, OnnxModel] = {}
        # Shared by every model: preprocessing is per upload (Pillow releases the GIL), not per model.
        self._preprocess_pool = ThreadPoolExecutor(settings.resolved_preprocess_threads,
                                                   thread_name_prefix="preprocess")

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

    def _load_one(self, slug: str) -> OnnxModel:
        settings = self._settings
        folder = resolve_version(settings.repository, slug, settings.versions.get(slug))
        manifest = load_manifest(folder)  # validates schema, taxonomy and sha256
        if manifest.slug != slug:
            raise ManifestError(f"{folder}: manifest is for {manifest.slug!r}, not {slug!r}")
        sessions = open_sessions(folder / manifest.model_file, settings)
        check_session(folder, manifest, sessions.sleeping)
        info = ModelInfo(
            name=slug, category=manifest.taxonomy_category(), version=manifest.version,
            spec=manifest.preprocess_spec(), precision=manifest.precision,
            provider=sessions.sleeping.get_providers()[0], versions=tuple(list_versions(settings.repository, slug)),
            ood_threshold=manifest.ood.threshold if manifest.ood else None,
        )
        model = OnnxModel(info, manifest, sessions, settings.top_k, batcher_config(settings, manifest, info.provider),
                          self._hooks(slug), self._preprocess_pool)
        if settings.warmup:
            try:
                model.warm_up()
            except InferenceError as error:
                raise ModelLoadError(f"warm-up inference failed: {error.__cause__}") from error
        self._metrics.model_info.labels(slug, str(manifest.version), manifest.precision, info.provider).set(1)
        if manifest.ood is not None:  # a flagged share of 0 from the start, not "no data"
            self._metrics.ood_scored_total.labels(slug)
            self._metrics.ood_flagged_total.labels(slug)
        log.info("loaded %s v%d from %s (%s, %s)", slug, manifest.version, folder, manifest.precision, info.provider)
        return model

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

    def ready_model(self, name: str) -> OnnxModel:
        info = self.info(name)
        model = self._models.get(info.name)
        if model is None:
            raise not_ready(info)
        return model

    async def start(self) -> None:
        if not self._infos:
            await asyncio.to_thread(self.load)
        for model in self._models.values():
            model.batcher.start()

    def begin_drain(self) -> None:
        for name, model in self._models.items():
            self._metrics.model_ready.labels(name).set(0)
            model.batcher.flush()  # queued images need not wait for company any more

    async def stop(self, drain_timeout_s: float) -> None:
        self.begin_drain()
        await asyncio.gather(*(m.batcher.stop(drain_timeout_s) for m in self._models.values()))
        self._preprocess_pool.shutdown(wait=False, cancel_futures=True)


def check_session(folder: Path, manifest: Manifest, session: ort.InferenceSession) -> None:
    """The ONNX file has the input and outputs its manifest names."""
    inputs = [i.name for i in session.get_inputs()]
    if manifest.input.name not in inputs:
        raise ManifestError(f"{folder}: model has inputs {inputs}, manifest says {manifest.input.name!r}")
    outputs = {o.name for o in session.get_outputs()}
    expected = [*manifest.output_names, manifest.ood.output] if manifest.ood else manifest.output_names
    missing = [name for name in expected if name not in outputs]
    if missing:
        raise ManifestError(f"{folder}: model lacks outputs {missing}; it has {sorted(outputs)}")
