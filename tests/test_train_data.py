import numpy as np
import pytest
from PIL import Image

from catalog.dataset import LabelRow
from catalog.preprocessing import PreprocessSpec, preprocess, reduce_on_decode
from catalog.real_labels import load_real_labels
from catalog.taxonomy import load_taxonomy
from model_training.augment import Augment
from model_training.data import ImageDataset, complete_rows, encode_targets, stratified_split
from model_training.model import value_orders_for
from service.images import ImageLimits, preprocess_upload

ORDERS = value_orders_for(load_taxonomy()["women_tshirts"])


def test_encode_targets_uses_head_order_and_minus_one_for_missing():
    rows = [LabelRow(1, "Women Tshirts", {"color": "black", "length": None}),
            LabelRow(2, "Women Tshirts", {"color": "white", "length": "crop"})]
    t = encode_targets(rows, ORDERS)
    names = list(ORDERS)
    assert t.shape == (2, 8)
    assert t[0, names.index("color")] == ORDERS["color"].index("black")
    assert t[0, names.index("length")] == -1 and t[1, names.index("length")] == 1
    assert list(complete_rows(t)) == []


def test_stratified_split_keeps_class_proportions():
    rows = [r for r in load_real_labels() if r.category == "Women Tshirts"][:1500]
    t = encode_targets(rows, ORDERS)
    train, val = stratified_split(t, 0.2, seed=0)
    assert len(set(train) & set(val)) == 0 and len(train) + len(val) == len(t)
    assert abs(len(val) - 300) <= 15
    color = list(ORDERS).index("color")
    for value in range(len(ORDERS["color"])):
        total = (t[:, color] == value).sum()
        if total >= 20:
            share = (t[val, color] == value).sum() / total
            assert 0.12 <= share <= 0.28, (value, share)
    again, _ = stratified_split(t, 0.2, seed=0)
    assert np.array_equal(train, again)
    with pytest.raises(ValueError):
        stratified_split(t, 1.5, seed=0)


@pytest.mark.parametrize("cached", [False, True])
def test_training_tensor_equals_the_serving_preprocessing(tmp_path, cached):
    """Training and serving cannot drift: the un-augmented item is exactly catalog.preprocess and exactly
    what the service decodes from the same file's bytes, JPEG draft-mode reduction included (the photo is
    big enough for it to decode at a quarter of its size)."""
    path = tmp_path / "000001.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (400, 300, 3), dtype=np.uint8)).save(path)
    spec = PreprocessSpec(height=40, width=32, interpolation="bicubic")
    with Image.open(path) as probe:
        reduce_on_decode(probe, spec)
        assert probe.size == (75, 100), "the test image should be one that draft mode reduces"
    row = LabelRow(1, "Women Tshirts", {}, image_path=path)
    dataset = ImageDataset([row], encode_targets([row], ORDERS), spec)
    if cached:
        dataset.preload()
    pixels, target = dataset[0]
    with Image.open(path) as image:
        expected = preprocess(image, spec)
    assert np.array_equal(pixels.numpy(), expected)
    served = preprocess_upload(path.read_bytes(), spec, ImageLimits(max_bytes=10**8, max_pixels=10**8))
    assert np.array_equal(pixels.numpy(), served)
    assert (target == -1).all()
    augmented = ImageDataset([row], encode_targets([row], ORDERS), spec, Augment(p=1.0))
    if cached:
        augmented.preload()
    assert augmented[0][0].shape == (3, 40, 32)


def test_the_unaugmented_view_shares_the_image_cache_and_skips_augmentation(tmp_path):
    rng = np.random.default_rng(1)
    spec = PreprocessSpec(height=24, width=24)
    rows, expected = [], []
    for i in range(3):
        path = tmp_path / f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (60, 50, 3), dtype=np.uint8)).save(path)
        rows.append(LabelRow(i, "Women Tshirts", {"color": "black"}, image_path=path))
        with Image.open(path) as image:
            expected.append(preprocess(image, spec))
    augmented = ImageDataset(rows, encode_targets(rows, ORDERS), spec, Augment(p=1.0), seed=3)
    augmented.preload()
    view = augmented.unaugmented()
    assert view.cache is augmented.cache and view.augment is None
    for row in rows:
        row.image_path.unlink()  # the view must read the shared cache, not the files
    for i in range(len(rows)):
        pixels, target = view[i]
        assert np.array_equal(pixels.numpy(), expected[i])
        assert np.array_equal(target.numpy(), augmented[i][1].numpy())
    assert not np.array_equal(view[0][0].numpy(), augmented[0][0].numpy())
