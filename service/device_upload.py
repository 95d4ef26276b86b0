"""The per-request step of GPU-side decoding (``gpu_decode``), torch-free: an upload is checked here (header,
size limits), before it joins a batch, and a plain JPEG travels on as its bytes for the GPU to decode with
its batch (``service/gpu_decode.py``). Anything else (PNG, CMYK, an EXIF rotation) is preprocessed on the
CPU as usual, so every upload gives the same tensor as without the option, up to resampling."""

from __future__ import annotations

import numpy as np
from PIL import ExifTags

from catalog.preprocessing import PreprocessSpec
from service.images import ImageLimits, open_image, preprocess_upload

DEVICE_FORMATS = ("JPEG", "MPO")
DEVICE_MODES = ("RGB", "L")
"""What nvJPEG decodes to the same RGB pixels as Pillow (greyscale is expanded to RGB by both)."""


def decodes_on_device(data: bytes, limits: ImageLimits) -> bool:
    """Whether the GPU may decode this upload; raises the usual 413/415/422 errors for a bad one."""
    with open_image(data, limits) as image:
        if image.format not in DEVICE_FORMATS or image.mode not in DEVICE_MODES:
            return False
        return bool(image.getexif().get(ExifTags.Base.Orientation, 1) == 1)


def upload_step(data: bytes, spec: PreprocessSpec, limits: ImageLimits) -> np.ndarray:
    """A JPEG's bytes as a flat uint8 array (the GPU decodes them with the batch), else the CPU's float32
    ``(3, H, W)`` tensor. The batch tells them apart by dtype."""
    if decodes_on_device(data, limits):
        return np.frombuffer(data, dtype=np.uint8)
    return preprocess_upload(data, spec, limits)
