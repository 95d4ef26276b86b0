"""Label rows of the synthetic catalog carry the real table's statistics over."""

from collections import Counter

import numpy as np
import pytest

from catalog.real_labels import load_real_labels
from catalog.taxonomy import load_taxonomy
from model_training.synthetic import fill_missing, sample_all

TAXONOMY = load_taxonomy()
N_PER_CATEGORY = 4000  # 20,000 rows in all


@pytest.fixture(scope="module")
def sampled():
    return sample_all(N_PER_CATEGORY, seed=123)


def frequencies(rows, attribute):
    counts = Counter(r.get(attribute) for r in rows)
    return {k: v / len(rows) for k, v in counts.items()}


@pytest.mark.parametrize("category", TAXONOMY.names)
def test_value_frequencies_and_missing_rates_match_the_real_table(sampled, category):
    real = [r.labels for r in load_real_labels() if r.category == category]
    synthetic = [r.observed for r in sampled if r.category == category]
    assert len(synthetic) == N_PER_CATEGORY
    for attribute in TAXONOMY.category(category).attributes:
        want, got = frequencies(real, attribute.name), frequencies(synthetic, attribute.name)
        for value in set(want) | set(got):  # None is the missing-label rate
            assert abs(want.get(value, 0) - got.get(value, 0)) < 0.03, (category, attribute.name, value)


def test_every_row_is_completed_with_valid_values_and_keeps_its_labels(sampled):
    for row in sampled[::7]:
        category = TAXONOMY.category(row.category)
        assert set(row.full) == set(category.attribute_names)
        for name, value in row.full.items():
            category.attribute(name).validate(value)
            if row.observed[name] is not None:
                assert row.full[name] == row.observed[name]


def test_missing_labels_are_filled_conditionally_on_related_attributes():
    rng = np.random.default_rng(0)
    # sleeveless kurtis are almost always labelled "sleeveless" in sleeve styling too
    drawn = Counter(fill_missing("Kurtis", {"sleeve_length": "sleeveless"}, rng)["sleeve_styling"] for _ in range(300))
    assert drawn["sleeveless"] > 250
    drawn = Counter(fill_missing("Kurtis", {"sleeve_length": "three-quarter sleeves"}, rng)["sleeve_styling"]
                    for _ in range(300))
    assert drawn["regular"] > 280


def test_sampling_is_deterministic():
    a = sample_all(30, seed=9)
    b = sample_all(30, seed=9)
    assert [(r.category, r.observed, r.full) for r in a] == [(r.category, r.observed, r.full) for r in b]
    assert [r.full for r in a] != [r.full for r in sample_all(30, seed=10)]
