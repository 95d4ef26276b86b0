import io

import numpy as np
import pytest
from PIL import Image

from catalog.preprocessing import (
    PreprocessError,
    PreprocessSpec,
    normalize,
    preprocess,
    reduce_on_decode,
    resize,
    to_rgb,
)


def test_output_is_float32_chw_with_imagenet_normalisation():
    spec = PreprocessSpec(height=16, width=16)
    out = preprocess(Image.new("RGB", (40, 30), (255, 0, 128)), spec)
    assert out.shape == (3, 16, 16) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert np.allclose(out[:, 5, 5], expected, atol=1e-5)


def test_stretch_ignores_aspect_and_letterbox_pads_with_white():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    stretched = np.asarray(resize(image, PreprocessSpec(height=20, width=20)))
    assert stretched.max() == 0
    boxed = np.asarray(resize(image, PreprocessSpec(height=20, width=20, resize="letterbox")))
    assert (boxed[0] == 255).all() and (boxed[10] == 0).all()


def test_alpha_is_composited_over_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(to_rgb(image)).min() == 255


def test_palette_with_transparency_and_16_bit_greyscale_become_rgb():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] * 256)
    palette.info["transparency"] = 0
    assert np.asarray(to_rgb(palette)).min() == 255
    grey16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert np.asarray(to_rgb(grey16)).min() == 255


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (30, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert to_rgb(Image.open(io.BytesIO(buffer.getvalue()))).size == (10, 30)


def test_normalize_matches_reference_formula():
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    spec = PreprocessSpec()
    reference = ((pixels / 255.0 - np.array(spec.mean)) / np.array(spec.std)).transpose(2, 0, 1)
    assert np.allclose(normalize(pixels, spec), reference, atol=1e-5)


def test_round_trip_and_errors_name_the_bad_value():
    spec = PreprocessSpec(height=64, width=48, interpolation="bicubic")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(PreprocessError, match="'cubic'"):
        PreprocessSpec(interpolation="cubic")  # type: ignore[arg-type]
    with pytest.raises(PreprocessError, match="'crop'"):
        PreprocessSpec.from_dict({"crop": 3})
    with pytest.raises(PreprocessError, match="2x512"):
        PreprocessSpec(height=2)


def test_reduce_on_decode_shrinks_big_jpegs_but_never_below_the_target():
    buffer = io.BytesIO()
    Image.new("RGB", (1600, 1200), (10, 200, 30)).save(buffer, format="JPEG")
    spec = PreprocessSpec(height=128, width=96)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        reduce_on_decode(image, spec)
        assert image.size == (200, 150)  # 1/8 scale; both sides stay >= 128
    png = io.BytesIO()
    Image.new("RGB", (1600, 1200)).save(png, format="PNG")
    with Image.open(io.BytesIO(png.getvalue())) as image:
        assert reduce_on_decode(image, spec).size == (1600, 1200)
