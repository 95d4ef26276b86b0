"""``service/preprocess_memory.py``: estimates from the header alone, and the shared budget."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from service.errors import PayloadTooLargeError, PreprocessBusyError
from service.preprocess_memory import LIGHT_BYTES, PreprocessMemory, working_bytes
from tests.image_zoo import png_zeros


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_estimates_come_from_the_header_and_grow_with_the_mode():
    grey16, rgba = opened(png_zeros(3000, 2000)), opened(png_zeros(3000, 2000, 8, 6))
    assert grey16.mode == "I;16" and working_bytes(grey16) == 3000 * 2000 * 8
    assert rgba.mode == "RGBA" and working_bytes(rgba) == 3000 * 2000 * 10
    assert grey16.tile  # nothing was decoded to estimate it


def test_heavy_uploads_share_the_budget_and_light_ones_never_wait_for_it():
    budget = PreprocessMemory(100 * 2**20)
    heavy = opened(png_zeros(3000, 2000))  # 48 MB
    first, second = budget.reserve(heavy), budget.reserve(heavy)
    with pytest.raises(PreprocessBusyError, match="92 MiB of 100 MiB in use; this one needs 46 MiB"):
        budget.reserve(heavy)
    light = opened(png_zeros(100, 100))
    assert working_bytes(light) <= LIGHT_BYTES
    with budget.reserve(light):
        assert budget.held_bytes == 2 * working_bytes(heavy)
    with first, second:
        pass
    assert budget.held_bytes == 0


def test_an_image_over_the_whole_budget_is_refused_naming_its_estimate():
    with pytest.raises(PayloadTooLargeError, match=r"7000x7000 \(PNG I;16\) and needs about 374 MiB.*limit is 256"):
        PreprocessMemory(256 * 2**20).reserve(opened(png_zeros(7000, 7000)))


def test_the_budget_is_exact_across_threads():
    budget = PreprocessMemory(2**40)
    image = opened(png_zeros(3000, 2000))

    def cycle(_: int) -> None:
        with budget.reserve(image):
            pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(cycle, range(2000)))
    assert budget.held_bytes == 0


def test_an_image_the_exif_says_to_turn_counts_the_turned_copy():
    from PIL import Image as PILImage

    from tests.image_zoo import _save, photo

    plain = photo((400, 300))
    exif = PILImage.Exif()
    exif[0x0112] = 6
    upright, turned = (opened(_save(plain, "JPEG")), opened(_save(plain, "JPEG", exif=exif.tobytes())))
    assert working_bytes(turned) == working_bytes(upright) + 400 * 300 * 4
