"""GPU-side decoding (``gpu_decode``): a batch's JPEGs decoded together by nvJPEG through
``torchvision.io.decode_jpeg(device="cuda")``, then resized and normalised on the GPU
(``service/gpu_preprocess.py``). torchvision is imported here only, when the option is on; without it (or
without CUDA) the service refuses to start, naming what is missing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from catalog.preprocessing import PreprocessSpec
from service.errors import InvalidImageError, ModelLoadError
from service.gpu_preprocess import check_spec, preprocess_decoded

log = logging.getLogger("service.gpu_decode")
Prepared = tuple[torch.Tensor, dict[int, BaseException]]


class GpuJpegDecoder:
    def __init__(self, decode_jpeg: Callable[..., Any], rgb: Any, device: torch.device) -> None:
        self._decode_jpeg = decode_jpeg
        self._rgb = rgb
        self._device = device

    @classmethod
    def open(cls, device: torch.device) -> GpuJpegDecoder:
        """The decoder for ``device``; raises :class:`ModelLoadError` without torchvision or CUDA."""
        if device.type != "cuda" or not torch.cuda.is_available():
            raise ModelLoadError(f"gpu_decode needs a CUDA device; the torch backend runs on {device.type!r}")
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
        except ImportError as error:
            raise ModelLoadError(f"gpu_decode needs torchvision (its io.decode_jpeg wraps nvJPEG), which cannot "
                                 f"be imported here: {error}") from None
        return cls(decode_jpeg, ImageReadMode.RGB, device)

    def decode(self, jpegs: Sequence[np.ndarray]) -> list[torch.Tensor | BaseException]:
        """Each JPEG as a ``(3, H, W)`` uint8 tensor on the GPU, or the error that one gave: one call for the
        batch, and one per image only when the batch call fails (so a corrupt file fails alone)."""
        tensors = [torch.from_numpy(np.array(j, copy=True)) for j in jpegs]
        try:
            return list(self._decode_jpeg(tensors, mode=self._rgb, device=self._device))
        except RuntimeError:
            return [self._decode_one(t) for t in tensors]

    def _decode_one(self, data: torch.Tensor) -> torch.Tensor | BaseException:
        try:
            return self._decode_jpeg(data, mode=self._rgb, device=self._device)
        except RuntimeError as error:
            return InvalidImageError(f"cannot decode the image: {error}")

    def batch_preparer(self, spec: PreprocessSpec) -> Callable[[list[np.ndarray]], Prepared]:
        """The runtime's ``prepare`` for one model: JPEG bytes (uint8) are decoded here, tensors the CPU
        made (float32) are copied over; images that fail to decode are reported by index."""
        check_spec(spec)

        def prepare(items: list[np.ndarray]) -> Prepared:
            jpeg_at = [i for i, item in enumerate(items) if item.dtype == np.uint8]
            decoded = dict(zip(jpeg_at, self.decode([items[i] for i in jpeg_at]), strict=True))
            failed = {i: d for i, d in decoded.items() if isinstance(d, BaseException)}
            inputs = []
            for i, item in enumerate(items):
                if i in failed:
                    continue
                image = decoded.get(i)
                inputs.append(preprocess_decoded(image, spec) if isinstance(image, torch.Tensor)
                              else torch.from_numpy(item).to(self._device, non_blocking=True))
            empty = torch.empty((0, *spec.input_shape), device=self._device)
            return (torch.stack(inputs) if inputs else empty), failed

        return prepare
