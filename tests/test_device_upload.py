"""``service/device_upload.py``: which uploads the GPU decodes (plain JPEGs, as their bytes) and which the
CPU preprocesses as before; bad uploads fail here, before batching."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from catalog.preprocessing import PreprocessSpec
from service.device_upload import upload_step
from service.errors import InvalidImageError, PayloadTooLargeError
from service.images import ImageLimits
from tests.service.fakes import image_bytes

SPEC = PreprocessSpec(height=32, width=32)
LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=1 << 20)


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("data", [image_bytes(), image_bytes(mode="L")], ids=["rgb", "grey"])
def test_a_plain_jpeg_travels_as_its_bytes(data):
    step = upload_step(data, SPEC, LIMITS)
    assert step.dtype == np.uint8 and step.tobytes() == data


@pytest.mark.parametrize("data", [image_bytes("PNG"), image_bytes(mode="CMYK", color=(0, 0, 0, 0)), rotated_jpeg()],
                         ids=["png", "cmyk", "exif-rotated"])
def test_other_uploads_are_preprocessed_on_the_cpu(data):
    step = upload_step(data, SPEC, LIMITS)
    assert step.dtype == np.float32 and step.shape == (3, 32, 32)


def test_bad_uploads_fail_before_batching():
    with pytest.raises(InvalidImageError):
        upload_step(b"not an image", SPEC, LIMITS)
    with pytest.raises(PayloadTooLargeError):
        upload_step(image_bytes(size=(2000, 1000)), SPEC, LIMITS)
