"""Per-request decoding: EXIF orientation, alpha over white, JPEG draft mode, limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from catalog.preprocessing import PreprocessSpec, preprocess
from service.errors import PayloadTooLargeError, UnsupportedMediaError
from service.images import ImageLimits, preprocess_upload
from tests.service.fakes import image_bytes

SPEC = PreprocessSpec(height=32, width=32)
LIMITS = ImageLimits(max_bytes=10_000_000, max_pixels=50_000_000)


def test_matches_catalog_preprocessing_for_a_small_png():
    data = image_bytes("PNG", size=(50, 70), color=(10, 120, 250))
    expected = preprocess(Image.open(io.BytesIO(data)), SPEC)
    np.testing.assert_array_equal(preprocess_upload(data, SPEC, LIMITS), expected)


def test_exif_orientation_is_applied():
    # A 2x1 image, left red and right blue, tagged "rotate 90 CW": upright it is red on top.
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    out = preprocess_upload(buffer.getvalue(), PreprocessSpec(height=32, width=16), LIMITS)
    top, bottom = out[:, 2, 8], out[:, -3, 8]
    assert top[0] > top[2] and bottom[2] > bottom[0]


def test_transparency_is_composited_over_white():
    data = image_bytes("PNG", "RGBA", color=(0, 0, 0, 0))
    white = preprocess_upload(image_bytes("PNG", color=(255, 255, 255)), SPEC, LIMITS)
    np.testing.assert_allclose(preprocess_upload(data, SPEC, LIMITS), white)


def test_big_jpeg_uses_draft_mode_and_stays_close_to_a_full_decode():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, size=(8, 8, 3)), np.ones((300, 300, 1))).astype(np.uint8)
    data = io.BytesIO()
    Image.fromarray(smooth).save(data, format="JPEG", quality=95)
    full = preprocess(Image.open(io.BytesIO(data.getvalue())), SPEC)
    drafted = preprocess_upload(data.getvalue(), SPEC, LIMITS)
    assert drafted.shape == (3, 32, 32)
    # Draft decodes a 2400 px JPEG at 1/8 scale (300 px); the result is within a few grey levels.
    assert np.abs(drafted - full).mean() < 0.05


def test_pixel_and_byte_limits():
    with pytest.raises(PayloadTooLargeError, match="1000x1000 = 1000000 pixels"):
        preprocess_upload(image_bytes("PNG", size=(1000, 1000)), SPEC, ImageLimits(10_000_000, 999_999))
    with pytest.raises(PayloadTooLargeError, match="bytes; the limit is 10"):
        preprocess_upload(image_bytes(), SPEC, ImageLimits(10, 10_000))


def test_formats_needing_an_outside_interpreter_are_refused():
    with pytest.raises(UnsupportedMediaError, match="EPS"):
        preprocess_upload(image_bytes("EPS"), SPEC, LIMITS)
