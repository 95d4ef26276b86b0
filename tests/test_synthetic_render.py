"""The synthetic renderer: every attribute value has its own visible cue; nuisance ignores the labels."""

import numpy as np
import pytest
from PIL import Image

from catalog.taxonomy import UnknownValueError, load_taxonomy
from model_training.synthetic import encode_jpeg, render_image

TAXONOMY = load_taxonomy()


def base_labels(category):
    """The most frequent value of every attribute (values are ordered most frequent first)."""
    return {a.name: a.values[0] for a in TAXONOMY.category(category).attributes}


def pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("category", TAXONOMY.names)
def test_every_value_of_every_attribute_renders_differently(category):
    base = base_labels(category)
    reference = render_image(category, base, seed=11)
    for attribute in TAXONOMY.category(category).attributes:
        images = {}
        for value in attribute.values:
            labels = {**base, attribute.name: value}
            image = render_image(category, labels, seed=11)
            assert image.size == reference.size, "label changes must not change the nuisance (image size)"
            images[value] = pixels(image)
        values = list(images)
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                changed = np.abs(images[a] - images[b]).max(axis=2) > 24
                assert changed.mean() > 0.0005, f"{category}/{attribute.name}: {a!r} and {b!r} look the same"


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_images_have_the_real_catalogs_sizes(difficulty):
    heights = set()
    for seed in range(12):
        image = render_image("Kurtis", {}, seed, difficulty)
        assert image.mode == "RGB"
        assert image.width == 512
        assert 380 <= image.height <= 768
        heights.add(image.height)
        assert 40 <= int(image.info["jpeg_quality"]) <= 95
    assert len(heights) > 6


def test_same_seed_same_bytes_and_different_seed_different_image():
    labels = base_labels("Sarees")
    a = encode_jpeg(render_image("Sarees", labels, 5))
    assert a == encode_jpeg(render_image("Sarees", labels, 5))
    assert a != encode_jpeg(render_image("Sarees", labels, 6))
    assert Image.open(__import__("io").BytesIO(a)).format == "JPEG"


def test_missing_labels_are_drawn_and_bad_values_refused():
    image = render_image("Women Tshirts", {"color": "pink", "length": None}, 3)
    assert image.width == 512
    with pytest.raises(UnknownValueError):
        render_image("Women Tshirts", {"color": "chartreuse"}, 3)
    with pytest.raises(ValueError, match="difficulty"):
        render_image("Kurtis", {}, 3, "brutal")


def test_the_synthetic_package_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, model_training.synthetic, model_training.synthetic.__main__, "
            "model_training.synthetic.preview; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
