"""The model repository served with PyTorch (``CATALOG_SERVICE_BACKEND=torch``): for hosts with a GPU but no
``onnxruntime-gpu``. Each version's ``model.pt2`` (or a pinned checkpoint) runs on CUDA in bf16/fp16 or on
the CPU in fp32, after proving it reproduces its manifest's recorded outputs; batching, decoding and metrics
are ``service/model_runner.py``'s, as for ONNX Runtime."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from catalog.manifest import Manifest
from service.metrics import ServiceMetrics
from service.model_runner import Outputs, RepositoryPredictor, Runtime
from service.settings import Settings
from service.torch_runtime import TorchChoice, TorchRunner, load_module, resolve_choice

if TYPE_CHECKING:
    from service.gpu_decode import GpuJpegDecoder

log = logging.getLogger("service.torch_predictor")


class TorchPredictor(RepositoryPredictor):
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        super().__init__(settings, metrics)
        self._choice: TorchChoice | None = None
        self._decoder: GpuJpegDecoder | None = None

    def load(self) -> None:
        """Decide device and precision (an impossible choice stops start-up naming it), then load."""
        settings = self._settings
        self._choice = resolve_choice(settings)
        if settings.gpu_decode:
            from service.gpu_decode import GpuJpegDecoder

            self._decoder = GpuJpegDecoder.open(self._choice.device)
        if self._choice.device.type == "cpu":
            # Like an ONNX Runtime session's intra-op threads: the rest of the cores preprocess uploads.
            torch.set_num_threads(settings.resolved_session_threads)
        super().load()

    def open_runtime(self, folder: Path, manifest: Manifest) -> Runtime:
        choice = self._choice
        assert choice is not None, "load() decides the device first"
        runner = TorchRunner(load_module(folder, manifest, self._settings, choice.device), manifest, choice,
                             self._settings.max_batch_size)
        runner.warm_up()
        diff = runner.verify(folder)
        log.info("%s: %s %s reproduces the recorded outputs (max |diff| %.2e)", manifest.slug,
                 choice.provider, choice.precision, diff)
        def run(batch: Any, admitted: int) -> Outputs:  # one call at a time: load changes nothing
            return runner.run(batch)

        if self._decoder is None:
            return Runtime(run, choice.provider, choice.precision)
        return Runtime(run, choice.provider, choice.precision,
                       prepare=self._decoder.batch_preparer(manifest.preprocess_spec()), device_decode=True)
