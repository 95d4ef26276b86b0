"""``service/gpu_preprocess.py``: the host's resize and normalisation in torch, checked on the CPU against
``catalog/preprocessing.py`` given the same decoded pixels (the tolerance BENCHMARKS.md documents)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from catalog.preprocessing import PreprocessError, PreprocessSpec, normalize, preprocess, resize
from service.gpu_preprocess import check_spec, draft_scale, preprocess_decoded
from tests.service.fakes import image_bytes


def photo(width: int = 500, height: int = 640, seed: int = 0) -> bytes:
    """A smooth, textured JPEG (a colour field with noise), like the benchmarks' uploads."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)).resize((width, height),
                                                                                  Image.Resampling.BICUBIC)
    pixels = np.clip(np.asarray(base, np.float32) + rng.normal(0, 12, (height, width, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def levels(a: np.ndarray, b: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The difference of two normalised tensors in pixel levels (0..255)."""
    return np.abs(a - b) * np.asarray(spec.std, np.float32)[:, None, None] * 255


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_given_the_same_pixels_the_resize_is_within_one_level_of_pillows(interpolation, mode):
    spec = PreprocessSpec(height=96, width=80, interpolation=interpolation, resize=mode)
    pixels = decoded(photo())
    host = normalize(np.asarray(resize(Image.fromarray(pixels), spec)), spec)
    device = preprocess_decoded(torch.from_numpy(pixels).permute(2, 0, 1), spec, reduce=False).numpy()
    assert device.shape == host.shape == (3, 96, 80) and device.dtype == np.float32
    diff = levels(host, device, spec)
    assert diff.max() <= 1.0 + 1e-3
    assert diff.mean() < 0.2


@pytest.mark.parametrize(("size", "side"), [((500, 640), 96), ((800, 1000), 384), ((800, 1000), 100),
                                            ((300, 200), 96), ((96, 96), 96)])
def test_draft_scale_is_the_reduction_pillows_jpeg_decoder_picks(size, side):
    image = Image.open(io.BytesIO(image_bytes(size=size)))
    image.draft("RGB", (side, side))
    spec = PreprocessSpec(height=side, width=side)
    assert image.size == tuple(-(-n // draft_scale(*size, spec)) for n in size)


def test_the_whole_path_stays_within_a_few_levels_of_the_host_path():
    spec = PreprocessSpec(height=96, width=96)
    for seed in range(3):
        data = photo(seed=seed)
        host = preprocess(Image.open(io.BytesIO(data)), spec)  # libjpeg's DCT reduction, then Pillow
        device = preprocess_decoded(torch.from_numpy(decoded(data)).permute(2, 0, 1), spec).numpy()
        diff = levels(host, device, spec)
        assert diff.max() <= 12 and diff.mean() < 1.0, (seed, diff.max(), diff.mean())


@pytest.mark.parametrize("interpolation", ["nearest", "lanczos"])
def test_filters_torch_does_not_reproduce_are_refused_naming_them(interpolation):
    with pytest.raises(PreprocessError, match=f"'{interpolation}' cannot be reproduced on the GPU"):
        check_spec(PreprocessSpec(interpolation=interpolation))
