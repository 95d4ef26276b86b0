"""The host's resize and normalisation (``catalog/preprocessing.py``) written in torch, for images decoded on
the GPU (``service/gpu_decode.py``): same size, same letterbox, same mean/std, and the same reduction the
host's JPEG decoder applies (``reduce_on_decode``: libjpeg's DCT scaling by 1/2, 1/4 or 1/8), emulated by
averaging ``scale x scale`` blocks.

Not bit-identical, by construction: PIL resamples in fixed point and libjpeg scales in the DCT domain, torch
in floating point. Measured by ``tests/test_gpu_preprocess.py`` and ``benchmarks/bench_gpu_preprocess.py``
(BENCHMARKS.md, "GPU-side decoding"): given the same decoded pixels the resize differs from PIL's by at most
a few levels of 255, most pixels not at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from catalog.preprocessing import PreprocessError, PreprocessSpec

TORCH_MODES = {"bilinear": "bilinear", "bicubic": "bicubic"}
"""PIL's filters and their torch equivalents (antialiased when shrinking, as PIL is). Lanczos has no torch
equivalent, and torch's nearest modes pick a neighbouring source pixel for ~8 % of PIL's (measured)."""
WHITE = 255.0


def check_spec(spec: PreprocessSpec) -> None:
    """A spec this module can follow; nearest and lanczos are refused naming the value."""
    if spec.interpolation not in TORCH_MODES:
        raise PreprocessError(f"interpolation {spec.interpolation!r} cannot be reproduced on the GPU (torch has "
                              f"{', '.join(TORCH_MODES)}); serve this model without gpu_decode")


def draft_scale(width: int, height: int, spec: PreprocessSpec) -> int:
    """The reduction Pillow's JPEG draft mode picks for ``reduce_on_decode``: the largest of 8, 4, 2, 1 that
    keeps both sides at or above the spec's larger side."""
    side = max(spec.width, spec.height)
    fits = min(width // side, height // side)
    return next(s for s in (8, 4, 2, 1) if fits >= s)


def reduce_like_draft(image: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """``(3, H, W)`` pixels, reduced as the host's decoder would, as float levels 0..255."""
    scale = draft_scale(image.shape[2], image.shape[1], spec)
    pixels = image.float()
    if scale == 1:
        return pixels
    reduced = F.avg_pool2d(pixels[None], scale, stride=scale, ceil_mode=True)[0]
    return reduced.round_().clamp_(0, 255)


def resize_levels(pixels: torch.Tensor, height: int, width: int, interpolation: str) -> torch.Tensor:
    """Resize float levels ``(3, h, w)`` to ``(3, height, width)``, rounded to whole levels like PIL's uint8."""
    if pixels.shape[1:] == (height, width):
        return pixels
    resized = F.interpolate(pixels[None], size=(height, width), mode=TORCH_MODES[interpolation], antialias=True,
                            align_corners=False)[0]
    return resized.round_().clamp_(0, 255)


def resize(pixels: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """Levels ``(3, h, w)`` -> ``(3, spec.height, spec.width)``: stretched, or letterboxed on white."""
    if spec.resize == "stretch":
        return resize_levels(pixels, spec.height, spec.width, spec.interpolation)
    height, width = pixels.shape[1:]
    scale = min(spec.width / width, spec.height / height)
    inner_w, inner_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = pixels.new_full((3, spec.height, spec.width), WHITE)
    top, left = (spec.height - inner_h) // 2, (spec.width - inner_w) // 2
    canvas[:, top:top + inner_h, left:left + inner_w] = resize_levels(pixels, inner_h, inner_w, spec.interpolation)
    return canvas


def normalize(levels: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """Levels 0..255 -> the model's input, as ``catalog.preprocessing.normalize`` computes it."""
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=levels.device).view(3, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(spec.std, dtype=torch.float32, device=levels.device).view(3, 1, 1) * 255.0)
    return (levels - mean) * inv_std


def preprocess_decoded(image: torch.Tensor, spec: PreprocessSpec, *, reduce: bool = True) -> torch.Tensor:
    """A decoded ``(3, H, W)`` uint8 RGB image (any device) -> the model's float32 input on that device.
    ``reduce`` applies the host decoder's draft reduction first (for full-size decodes of JPEGs)."""
    pixels = reduce_like_draft(image, spec) if reduce else image.float()
    return normalize(resize(pixels, spec), spec)
