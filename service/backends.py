"""The one place that picks the execution backend (``CATALOG_SERVICE_BACKEND``). The torch backend's modules
are imported only when it is chosen, so the default serving path never imports torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.metrics import ServiceMetrics
from service.model_runner import RepositoryPredictor
from service.settings import Settings

if TYPE_CHECKING:
    from service.inference_protocol import InferenceAddress


def create_predictor(settings: Settings, metrics: ServiceMetrics,
                     inference: InferenceAddress | None = None) -> RepositoryPredictor:
    """The predictor for ``settings.backend``; its models load on ``load()`` (or ``start()``). A front end of
    ``SHARED_INFERENCE`` (``inference`` given) loads no model: the inference process there runs them."""
    if inference is not None:
        from service.remote_predictor import RemotePredictor

        return RemotePredictor(settings, metrics, inference)
    if settings.backend == "torch":
        from service.torch_predictor import TorchPredictor

        return TorchPredictor(settings, metrics)
    from service.onnx_predictor import OnnxPredictor

    return OnnxPredictor(settings, metrics)
