"""``backfill/decode.py``: the read-and-decode stage preprocesses exactly as the service does, and every
image it cannot use fails its own row with the service's error code."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from backfill import decode
from backfill.decode import DECODED_SCHEMA, DecodeConfig, decode_batch
from catalog.preprocessing import PreprocessSpec
from service.images import ImageLimits, preprocess_upload
from service.preprocess_memory import PreprocessMemory
from service.settings import Settings
from tests import image_zoo

SPEC = PreprocessSpec(height=32, width=32)


def batch(paths: list[str]) -> pa.Table:
    n = len(paths)
    return pa.table({"id": [f"id{i}" for i in range(n)], "slug": ["kurtis"] * n, "image": paths,
                     "row": pa.array(range(10, 10 + n), pa.int64()), "shard": pa.array([3] * n, pa.int32())})


def test_defaults_are_the_services_limits():
    config = DecodeConfig({})
    defaults = Settings.model_fields
    assert config.max_bytes == defaults["max_upload_bytes"].default
    assert config.max_pixels == defaults["max_image_pixels"].default
    assert config.memory_bytes == defaults["preprocess_memory_bytes"].default


def test_good_and_hostile_images_each_get_their_own_row(tmp_path):
    files = {
        "photo.jpg": image_zoo._save(image_zoo.photo(), "JPEG"),
        "truncated.jpg": image_zoo._save(image_zoo.photo(), "JPEG")[:200],
        "text.jpg": b"not an image\n" * 10,
        "bomb.png": image_zoo.png_bomb(),
        "eps.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    out = decode_batch(batch([str(tmp_path / n) for n in [*files, "absent.jpg"]]), DecodeConfig({"kurtis": SPEC}))
    assert out.schema == DECODED_SCHEMA
    assert out.column("row").to_pylist() == list(range(10, 16)) and set(out.column("shard").to_pylist()) == {3}
    assert out.column("error").to_pylist() == [None, "invalid_image", "invalid_image", "payload_too_large",
                                               "unsupported_media_type", "read_failed"]
    assert out.column("error_detail")[0].as_py() is None and "absent.jpg" in out.column("error_detail")[5].as_py()
    limits = ImageLimits(DecodeConfig({}).max_bytes, DecodeConfig({}).max_pixels, PreprocessMemory(2**28))
    expected = preprocess_upload(files["photo.jpg"], SPEC, limits)
    assert np.array_equal(np.frombuffer(out.column("pixels")[0].as_py(), np.float32).reshape(3, 32, 32), expected)
    assert out.column("pixels").null_count == 5
    assert all(t >= 0 for name in ("read_s", "decode_s") for t in out.column(name).to_pylist())


def test_an_error_no_check_foresaw_fails_only_its_row(tmp_path, monkeypatch):
    image = tmp_path / "photo.jpg"
    image.write_bytes(image_zoo._save(image_zoo.photo(), "JPEG"))
    real = decode.preprocess_upload
    calls = iter([RuntimeError("a decoder bug"), None])

    def flaky(data, spec, limits):
        error = next(calls)
        if error is not None:
            raise error
        return real(data, spec, limits)

    monkeypatch.setattr(decode, "preprocess_upload", flaky)
    out = decode_batch(batch([str(image), str(image)]), DecodeConfig({"kurtis": SPEC}))
    assert out.column("error").to_pylist() == ["internal_error", None]
    assert out.column("error_detail")[0].as_py() == "RuntimeError: a decoder bug"
