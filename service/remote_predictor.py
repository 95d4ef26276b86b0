"""A front end's predictor with ``SHARED_INFERENCE``: the repository's manifests, batchers and decoders as
every backend has them (``service/model_runner.py``), and each model's batches run by the inference process
through shared memory (``service/inference_client.py``). It loads the versions the inference process
loaded, and no model: no session, no torch."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from catalog.manifest import Manifest, ManifestError
from service.errors import InferenceUnavailableError, ModelLoadError
from service.inference_client import UNAVAILABLE, InferenceLink, ModelSlots
from service.inference_protocol import InferenceAddress, RemoteModel
from service.metrics import ServiceMetrics
from service.model_runner import ModelRunner, RepositoryPredictor, Runtime, batcher_config
from service.predictor import ModelInfo
from service.settings import Settings


class RemotePredictor(RepositoryPredictor):
    def __init__(self, settings: Settings, metrics: ServiceMetrics, address: InferenceAddress) -> None:
        super().__init__(settings, metrics)
        self._link = InferenceLink(address, on_change=self._link_changed)
        self._remote: dict[str, RemoteModel] = {}
        self._slots: list[ModelSlots] = []
        self._draining = False

    def load(self) -> None:
        """The models (and versions) the inference process serves: a version published since it loaded is
        not picked up here alone."""
        self._remote = self._link.start().models
        pinned = {slug: model.version for slug, model in self._remote.items() if model.version is not None}
        # The inference process warmed each model; a warm-up here would only count as a model call.
        self._settings = self._settings.model_copy(update={"categories": list(self._remote), "versions": pinned,
                                                           "warmup": False})
        super().load()

    def open_runtime(self, folder: Path, manifest: Manifest) -> Runtime:
        remote = self._remote[manifest.slug]
        if remote.error is not None:
            raise ModelLoadError(f"the inference process could not load it: {remote.error}")
        shape = manifest.preprocess_spec().input_shape
        if tuple(remote.input_shape) != tuple(shape):
            raise ManifestError(f"{folder}: input {shape}, and the inference process runs {remote.input_shape}")
        batching = batcher_config(self._settings, manifest, remote.provider)
        capacity = min(batching.max_batch_size, remote.max_batch_size)
        slots = ModelSlots(self._link, manifest.slug, remote, capacity, batching.max_in_flight)
        self._slots.append(slots)
        slots.connect()  # a slot the inference process refuses stops start-up here, not at the first request
        return slots.runtime()

    def models(self) -> Sequence[ModelInfo]:
        infos = super().models()
        if self._link.up:
            return infos
        return [dataclasses.replace(info, ready=False, error=UNAVAILABLE) if info.ready else info for info in infos]

    def ready_model(self, name: str) -> ModelRunner:
        model = super().ready_model(name)
        if not self._link.up:
            raise InferenceUnavailableError(UNAVAILABLE)
        return model

    def _link_changed(self, up: bool) -> None:
        for name in self._models:  # what /metrics says agrees with readiness
            self._metrics.model_ready.labels(name).set(1 if up and not self._draining else 0)

    def begin_drain(self) -> None:
        self._draining = True
        super().begin_drain()

    async def stop(self, drain_timeout_s: float) -> None:
        await super().stop(drain_timeout_s)
        self._link.stop()
        for slots in self._slots:
            slots.close()
