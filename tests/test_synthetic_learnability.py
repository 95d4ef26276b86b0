"""A quick check that the cues are learnable: logistic regression on tiny features beats the majority class.

A few hundred Men Tshirts at medium difficulty; the attribute under test is drawn uniformly (the other
labels come from real rows), so the majority baseline is about 1 / number of values.
"""

from collections import Counter

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from catalog.taxonomy import load_taxonomy
from model_training.synthetic import render_image, sample_rows

N_TRAIN, N_TEST = 180, 90


def colour_histogram(image):
    small = np.asarray(image.resize((64, 64)), dtype=np.int64) // 64  # 4 levels per channel
    codes = small[..., 0] * 16 + small[..., 1] * 4 + small[..., 2]
    return np.bincount(codes.ravel(), minlength=64) / codes.size


def shape_pixels(image):
    return np.asarray(image.convert("L").resize((24, 32)), dtype=np.float64).ravel() / 255


def dataset(attribute, features, seed):
    category = load_taxonomy().category("Men Tshirts")
    values = category.attribute(attribute).values
    rng = np.random.default_rng(seed)
    rows = sample_rows(category.name, N_TRAIN + N_TEST, rng)
    x, y = [], []
    for i, row in enumerate(rows):
        value = values[int(rng.integers(len(values)))]
        image = render_image(category.name, {**row.full, attribute: value}, seed=seed * 10_000 + i)
        x.append(features(image))
        y.append(value)
    return np.array(x), np.array(y)


@pytest.mark.parametrize(("attribute", "features", "margin"), [
    ("color", colour_histogram, 0.25),
    ("sleeve_length", shape_pixels, 0.15),
])
def test_a_linear_model_beats_the_majority_class(attribute, features, margin):
    x, y = dataset(attribute, features, seed=5)
    scaler = StandardScaler().fit(x[:N_TRAIN])
    model = LogisticRegression(max_iter=2000, C=0.5).fit(scaler.transform(x[:N_TRAIN]), y[:N_TRAIN])
    accuracy = float((model.predict(scaler.transform(x[N_TRAIN:])) == y[N_TRAIN:]).mean())
    majority = Counter(y[N_TRAIN:]).most_common(1)[0][1] / N_TEST
    assert accuracy > majority + margin, (attribute, accuracy, majority)
