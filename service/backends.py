"""The one place that picks the execution backend (``CATALOG_SERVICE_BACKEND``). The torch backend's modules
are imported only when it is chosen, so the default serving path never imports torch."""

from __future__ import annotations

from service.metrics import ServiceMetrics
from service.model_runner import RepositoryPredictor
from service.settings import Settings


def create_predictor(settings: Settings, metrics: ServiceMetrics) -> RepositoryPredictor:
    """The predictor for ``settings.backend``; its models load on ``load()`` (or ``start()``)."""
    if settings.backend == "torch":
        from service.torch_predictor import TorchPredictor

        return TorchPredictor(settings, metrics)
    from service.onnx_predictor import OnnxPredictor

    return OnnxPredictor(settings, metrics)
