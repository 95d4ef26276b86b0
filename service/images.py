"""Preprocessing one upload into the model's input (read the file, resize, normalise), with limits; runs
per request, before batching, so a bad image fails only its own request."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from catalog.preprocessing import PreprocessSpec, preprocess, reduce_on_decode
from service.errors import InvalidImageError, PayloadTooLargeError, UnsupportedMediaError
from service.preprocess_memory import DEFAULT_LIMIT_BYTES, PreprocessMemory

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""Pillow decoders we accept; none of them runs an outside interpreter (EPS would run Ghostscript).
The JPEG opener also yields MPO, the multi-picture JPEG many phones write."""

# Register every plugin now: Image.open(formats=...) looks formats up in the registry, which before
# init() holds only the few preloaded ones; and _identify_refused needs them all to name a format.
Image.init()
# Sizes are checked here against the service's own limits, from the header. Pillow's bomb *warning* is
# silenced once, process-wide: warnings.catch_warnings() around each decode is not thread-safe (its
# filters leaked between decode threads and turned a 413 into a 422 under load). Pillow's bomb *error*
# (over twice its own limit) still stops Image.open and is answered 413.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    memory: PreprocessMemory = field(default_factory=lambda: PreprocessMemory(DEFAULT_LIMIT_BYTES))


def _identify_refused(data: bytes) -> str | None:
    """The format of a file Pillow knows but we refuse, read from its header only (no decoding)."""
    try:
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
    """Encoded bytes -> float32 CHW tensor exactly as the manifest's spec says. Its memory is estimated
    from the header and reserved before any pixel is decoded."""
    image = reduce_on_decode(open_image(data, limits), spec)
    with limits.memory.reserve(image):
        try:
            image.load()
            # The core's preprocessing from here, as in training and export (the reduction is done already).
            return preprocess(image, spec)
        except Image.DecompressionBombError as error:
            raise PayloadTooLargeError(f"decompression bomb refused: {error}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            # Pillow reports truncated and corrupt data as OSError/SyntaxError; keep its reason.
            raise InvalidImageError(f"cannot decode the image: {error}") from None
