import random

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from catalog.dataset import LabelRow
from catalog.metric import NO_PREDICTION, attribute_score, harmonic_mean, score
from catalog.real_labels import load_real_labels
from catalog.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def truth():
    rows = load_real_labels()
    rng = random.Random(0)
    return rng.sample(list(rows), 3000)


def perturb(rows, rate, seed, invalid_rate=0.0, drop_rate=0.0):
    rng = random.Random(seed)
    taxonomy = load_taxonomy()
    out = {}
    for row in rows:
        if rng.random() < drop_rate:
            continue
        labels = {}
        for attribute in taxonomy[row.category].attributes:
            value = row.labels[attribute.name] or attribute.values[0]
            if rng.random() < rate:
                value = rng.choice(attribute.values)
            if rng.random() < invalid_rate:
                value = "not-a-value"
            labels[attribute.name] = value
        out[row.id] = LabelRow(row.id, row.category, labels)
    return out


def sklearn_score(truth, predictions):
    taxonomy = load_taxonomy()
    category_scores = []
    for category in taxonomy.values():
        rows = [r for r in truth if r.category == category.name]
        if not rows:
            continue
        hms = []
        for attribute in category.attributes:
            pairs = [
                (r.labels[attribute.name],
                 (predictions[r.id].labels[attribute.name] if r.id in predictions else None) or NO_PREDICTION)
                for r in rows if r.labels[attribute.name] is not None
            ]
            if not pairs:
                continue
            y_true, y_pred = zip(*pairs, strict=True)
            micro = f1_score(y_true, y_pred, average="micro")
            macro = f1_score(y_true, y_pred, average="macro", zero_division=0)
            hms.append(harmonic_mean(micro, macro))
        category_scores.append(np.mean(hms))
    return float(np.mean(category_scores))


def test_truth_against_itself_scores_exactly_one(truth):
    predictions = {r.id: LabelRow(r.id, r.category, {k: v or "x" for k, v in r.labels.items()}) for r in truth}
    assert score(truth, predictions).score == 1.0


@pytest.mark.parametrize(("rate", "invalid", "drop"), [(0.1, 0.0, 0.0), (0.5, 0.0, 0.0), (0.3, 0.05, 0.05)])
def test_agrees_with_sklearn_on_perturbed_predictions(truth, rate, invalid, drop):
    predictions = perturb(truth, rate, seed=int(rate * 100), invalid_rate=invalid, drop_rate=drop)
    ours = score(truth, predictions).score
    assert ours < 1.0
    assert abs(ours - sklearn_score(truth, predictions)) < 1e-9


def test_attribute_score_matches_sklearn_in_detail():
    rng = np.random.default_rng(3)
    y_true = list(rng.choice(["a", "b", "c", "d"], size=400, p=[0.6, 0.2, 0.15, 0.05]))
    y_pred = list(rng.choice(["a", "b", "c", "e"], size=400))
    result = attribute_score("x", y_true, y_pred, allowed=["a", "b", "c", "d"])
    assert result.accuracy == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert result.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    assert result.weighted_f1 == pytest.approx(f1_score(y_true, y_pred, average="weighted"), abs=1e-12)
    assert result.invalid_predictions == y_pred.count("e")


def test_attribute_without_labelled_rows_is_reported_and_left_out():
    truth = [LabelRow(1, "Men Tshirts", {"color": "white", "neck": None, "pattern": None,
                                         "print_or_pattern_type": None, "sleeve_length": None})]
    predictions = {1: LabelRow(1, "Men Tshirts", {"color": "white", "neck": "polo"})}
    report = score(truth, predictions)
    men = report.categories["Men Tshirts"]
    assert men.score == 1.0
    assert men.unscored == ["neck", "pattern", "print_or_pattern_type", "sleeve_length"]
    assert "no labelled rows" in report.format_table()


def test_missing_prediction_row_counts_as_wrong_and_is_reported():
    truth = [LabelRow(i, "Men Tshirts", {"color": "white"}) for i in range(4)]
    predictions = {i: LabelRow(i, "Men Tshirts", {"color": "white"}) for i in range(3)}
    report = score(truth, predictions)
    men = report.categories["Men Tshirts"]
    assert men.missing_predictions == 1
    assert men.attributes["color"].accuracy == 0.75
    assert report.to_json()["categories"]["Men Tshirts"]["missing_predictions"] == 1


def test_value_outside_taxonomy_is_wrong():
    truth = [LabelRow(i, "Men Tshirts", {"color": "white"}) for i in range(2)]
    predictions = {0: LabelRow(0, "Men Tshirts", {"color": "white"}), 1: LabelRow(1, "Men Tshirts", {"color": "ivory"})}
    result = score(truth, predictions).categories["Men Tshirts"].attributes["color"]
    assert result.accuracy == 0.5 and result.invalid_predictions == 1


def test_final_score_is_plain_mean_over_categories():
    truth = [LabelRow(0, "Men Tshirts", {"color": "white"}), LabelRow(1, "Kurtis", {"color": "red"})]
    predictions = {0: LabelRow(0, "Men Tshirts", {"color": "white"}), 1: LabelRow(1, "Kurtis", {"color": "blue"})}
    report = score(truth, predictions)
    assert report.categories["Kurtis"].score == 0.0
    assert report.score == 0.5
