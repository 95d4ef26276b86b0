"""What preprocessing an upload will cost in memory, read from its header before any pixel is decoded,
and the service-wide budget that heavy uploads draw on, so concurrent ones cannot add up."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from PIL import ExifTags, Image

from service.errors import PayloadTooLargeError, PreprocessBusyError

# Peak resident memory of service.images.preprocess_upload per pixel of the decoded image, by mode,
# measured on 4000x4000 PNG/TIFF/GIF/BMP files (ru_maxrss growth, Pillow 13; JPEGs are counted at their
# draft-reduced size) and rounded up by about one byte: RGB 4.2, RGBA 9.0, LA 13.0, 16-bit 7.4, L 5.2,
# P 5.1, CMYK 8.2.
_BYTES_PER_PIXEL = {
    "1": 6, "L": 6, "P": 10, "RGB": 5, "RGBX": 9, "YCbCr": 9, "CMYK": 9, "LAB": 9, "HSV": 9,
    "RGBA": 10, "RGBa": 14, "LA": 14, "La": 14, "PA": 14, "I;16": 8, "I;16B": 8, "I;16L": 8, "I;16N": 8,
    "I": 14, "F": 9,
}
_UNKNOWN_MODE_BYTES_PER_PIXEL = 16
_ROTATION_COPY_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_WEBP_DECODER_BYTES_PER_PIXEL = 12
"""libwebp decodes into a full-size buffer of its own first (measured: RGB 16.1 against PNG's 4.2)."""
DEFAULT_LIMIT_BYTES = 256 * 1024 * 1024
LIGHT_BYTES = 16 * 1024 * 1024
"""Uploads estimated at or below this do not draw on the budget: their number is already bounded by
admission, and a budget full of heavy uploads must not shed the ordinary ones."""


def working_bytes(image: Image.Image) -> int:
    """Estimated peak memory to preprocess ``image`` (opened, header only; JPEG draft already applied)."""
    per_pixel = _BYTES_PER_PIXEL.get(image.mode, _UNKNOWN_MODE_BYTES_PER_PIXEL)
    if image.format == "WEBP":
        per_pixel += _WEBP_DECODER_BYTES_PER_PIXEL
    if _rotated(image):  # exif_transpose copies the decoded image beside itself (measured: RGB 4.6 -> 8.6)
        per_pixel += _ROTATION_COPY_BYTES_PER_PIXEL.get(image.mode, 4)
    return image.width * image.height * per_pixel


def _rotated(image: Image.Image) -> bool:
    """Whether the header's EXIF orientation asks for a turn; only EXIF already read with the header counts
    (asking Pillow for more could decode the image)."""
    raw = image.info.get("exif")
    if not raw:
        return False
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception:  # a broken EXIF block: preprocessing ignores it too
        return False
    return exif.get(ExifTags.Base.Orientation, 1) != 1


def mebibytes(count: int) -> str:
    return f"{math.ceil(count / 2**20)} MiB"


@dataclass
class Reservation:
    budget: PreprocessMemory | None
    size: int

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.budget is not None:
            self.budget.release(self.size)


class PreprocessMemory:
    """Bytes of estimated working memory held by heavy uploads being preprocessed, across every model
    and thread. A heavy upload that does not fit is refused at once (503: shed, not queued, so no
    preprocessing thread ever waits on another); one that could never fit is a 413."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        return self._held

    def reserve(self, image: Image.Image) -> Reservation:
        size = working_bytes(image)
        if size > self.limit_bytes:
            raise PayloadTooLargeError(
                f"image is {image.width}x{image.height} ({image.format} {image.mode}) and needs about "
                f"{mebibytes(size)} of memory to preprocess; the limit is {mebibytes(self.limit_bytes)}")
        if size <= LIGHT_BYTES:
            return Reservation(None, size)
        with self._lock:
            if self._held + size > self.limit_bytes:
                raise PreprocessBusyError(
                    f"the server is preprocessing other large images ({mebibytes(self._held)} of "
                    f"{mebibytes(self.limit_bytes)} in use; this one needs {mebibytes(size)}); retry shortly")
            self._held += size
        return Reservation(self, size)

    def release(self, size: int) -> None:
        with self._lock:
            self._held -= size
