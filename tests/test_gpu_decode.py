"""``service/gpu_decode.py``'s batching logic on the CPU, with Pillow standing in for nvJPEG (torchvision is
not installed here): JPEG bytes are decoded with their batch, CPU tensors pass through, a corrupt file
fails alone; without CUDA the option is refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from catalog.preprocessing import PreprocessSpec, preprocess
from service.errors import InvalidImageError, ModelLoadError
from service.gpu_decode import GpuJpegDecoder
from tests.service.fakes import image_bytes

SPEC = PreprocessSpec(height=32, width=32)


def pillow_decode_jpeg(data, *, mode, device):
    """``torchvision.io.decode_jpeg``'s contract: one tensor or a list; raises RuntimeError on bad data."""
    if isinstance(data, list):
        return [pillow_decode_jpeg(d, mode=mode, device=device) for d in data]
    try:
        pixels = np.array(Image.open(io.BytesIO(data.numpy().tobytes())).convert("RGB"))
    except OSError as error:
        raise RuntimeError(str(error)) from None
    return torch.from_numpy(pixels).permute(2, 0, 1).to(device)


def test_jpegs_are_decoded_with_their_batch_and_a_corrupt_one_fails_alone():
    decoder = GpuJpegDecoder(pillow_decode_jpeg, "RGB", torch.device("cpu"))
    prepare = decoder.batch_preparer(SPEC)
    good, png = image_bytes(color=(200, 30, 30)), image_bytes("PNG", color=(10, 10, 250))
    cpu_tensor = preprocess(Image.open(io.BytesIO(png)), SPEC)
    items = [np.frombuffer(good, np.uint8), np.frombuffer(good[:40], np.uint8), cpu_tensor]
    batch, failed = prepare(items)
    assert list(failed) == [1] and isinstance(failed[1], InvalidImageError)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.float32
    host = preprocess(Image.open(io.BytesIO(good)), SPEC)
    assert np.abs(batch[0].numpy() - host).max() < 0.05  # a flat colour: the same up to rounding
    assert np.array_equal(batch[1].numpy(), cpu_tensor)


def test_without_cuda_the_option_refuses_to_start():
    with pytest.raises(ModelLoadError, match="gpu_decode needs a CUDA device"):
        GpuJpegDecoder.open(torch.device("cpu"))
