"""Preprocessing one upload into the model's input (read the file, resize, normalise), with limits; runs
per request, before batching, so a bad image fails only its own request."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from catalog.preprocessing import PreprocessSpec, preprocess, reduce_on_decode
from service.errors import InvalidImageError, PayloadTooLargeError, UnsupportedMediaError

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""Pillow decoders we accept; none of them runs an outside interpreter (EPS would run Ghostscript).
The JPEG opener also yields MPO, the multi-picture JPEG many phones write."""

# Register every plugin now: Image.open(formats=...) looks formats up in the registry, which before
# init() holds only the few preloaded ones; and _identify_refused needs them all to name a format.
Image.init()


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int


def _identify_refused(data: bytes) -> str | None:
    """The format of a file Pillow knows but we refuse, read from its header only (no decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return image.format
    except Exception:  # not an image at all
        return None


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open (header only) and check size limits; raises 413/415/422 errors with the reason."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    if not data:
        raise InvalidImageError("the image file is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        refused = _identify_refused(data)
        if refused is not None:
            raise UnsupportedMediaError(
                f"image format {refused} is not accepted; accepted formats: {', '.join(ALLOWED_FORMATS)}"
            ) from None
        raise InvalidImageError("not an image (or a format Pillow cannot identify)") from None
    except Image.DecompressionBombError as error:
        raise PayloadTooLargeError(f"decompression bomb refused: {error}") from None
    except Exception as error:
        raise InvalidImageError(f"cannot read the image header: {error}") from None
    if image.width * image.height > limits.max_pixels:
        raise PayloadTooLargeError(
            f"image is {image.width}x{image.height} = {image.width * image.height} pixels; "
            f"the limit is {limits.max_pixels}"
        )
    return image


def preprocess_upload(data: bytes, spec: PreprocessSpec, limits: ImageLimits) -> np.ndarray:
    """Encoded bytes -> float32 CHW tensor exactly as the manifest's spec says."""
    image = reduce_on_decode(open_image(data, limits), spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
        # The core's preprocessing from here, as in training and export (the reduction is done already).
        return preprocess(image, spec)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise PayloadTooLargeError(f"decompression bomb refused: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError; keep its reason.
        raise InvalidImageError(f"cannot decode the image: {error}") from None
