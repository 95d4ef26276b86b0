import random

import numpy as np
from PIL import Image, ImageDraw

from model_training.augment import Augment


def picture():
    image = Image.new("RGB", (64, 80), (255, 255, 255))
    ImageDraw.Draw(image).rectangle([5, 10, 30, 70], fill=(200, 40, 40))
    return image


def test_probability_zero_is_identity_and_one_always_changes():
    image = picture()
    assert Augment(p=0.0)(image, random.Random(0)) is image
    changed = [np.asarray(Augment(p=1.0)(image, random.Random(s))) for s in range(5)]
    assert all(a.shape == (80, 64, 3) for a in changed)
    assert all(not np.array_equal(a, np.asarray(image)) for a in changed)


def test_about_half_the_images_are_augmented():
    image = picture()
    augment = Augment(p=0.5)
    touched = sum(augment(image, random.Random(s)) is not image for s in range(400))
    assert 150 < touched < 250


def test_no_colour_jitter_colour_is_a_label():
    uniform = Image.new("RGB", (64, 64), (30, 120, 200))
    for seed in range(10):
        out = np.asarray(Augment(p=1.0, max_rotation=0.0)(uniform, random.Random(seed)))
        assert (out == (30, 120, 200)).all()


def test_same_seed_same_augmentation():
    image = picture()
    a = Augment(p=1.0)(image, random.Random(7))
    b = Augment(p=1.0)(image, random.Random(7))
    assert np.array_equal(np.asarray(a), np.asarray(b))
