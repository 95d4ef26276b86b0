from pathlib import Path

import numpy as np
import pytest

from catalog.dataset import read_labels
from catalog.decoding import ConsistencyRule
from catalog.taxonomy import load_taxonomy
from model_training.data import encode_targets
from model_training.rules import mine_rules, select_rules

CATEGORY = load_taxonomy()["men_tshirts"]
ORDERS = {a.name: a.values for a in CATEGORY.attributes}
PATTERN, PRINT = 2, 3  # attribute positions of pattern and print_or_pattern_type


def targets_with_implication(n=200, seed=0):
    rng = np.random.default_rng(seed)
    t = np.stack([rng.integers(0, len(v), n) for v in ORDERS.values()], axis=1)
    solid = t[:, PATTERN] == ORDERS["pattern"].index("solid")
    t[solid, PRINT] = ORDERS["print_or_pattern_type"].index("solid")
    t[rng.random(n) < 0.2, PRINT] = -1  # missing labels are ignored by the miner
    return t


def test_mining_finds_the_implication_with_support_and_confidence():
    rules = mine_rules(targets_with_implication(), ORDERS, min_support=20, min_confidence=0.95)
    rule = next(r for r in rules if r.if_attribute == "pattern")
    assert (rule.if_value, rule.then_attribute, rule.then_value) == ("solid", "print_or_pattern_type", "solid")
    assert rule.confidence == 1.0 and rule.support >= 20
    assert all(r.confidence >= 0.95 and r.support >= 20 for r in rules)
    assert not mine_rules(targets_with_implication(), ORDERS, min_support=10_000)


def test_selection_keeps_only_rules_that_raise_the_score():
    rng = np.random.default_rng(3)
    truth = targets_with_implication(100, seed=3)
    truth[:, PRINT] = np.where(truth[:, PRINT] < 0, 0, truth[:, PRINT])
    logits = {name: rng.normal(size=(100, len(v))) for name, v in ORDERS.items()}
    for a, name in enumerate(ORDERS):
        logits[name][np.arange(100), truth[:, a]] += 3.0
    # the print head is unsure on solid rows: the truth is only its second choice there
    solid = truth[:, PATTERN] == 0
    logits["print_or_pattern_type"][solid, 1] = logits["print_or_pattern_type"][solid, 0] + 0.5
    helpful = ConsistencyRule("pattern", "solid", "print_or_pattern_type", "solid")
    harmful = ConsistencyRule("neck", "polo", "sleeve_length", "long sleeves")
    kept, trials = select_rules([harmful, helpful], CATEGORY, {}, logits, truth)
    assert kept == [helpful]
    assert [t.kept for t in trials] == [False, True]
    assert trials[1].score_with > trials[1].score_before


def test_a_rule_that_only_restates_a_common_value_is_dropped_by_lift():
    rng = np.random.default_rng(1)
    t = np.stack([rng.integers(0, len(v), 400) for v in ORDERS.values()], axis=1)
    sleeve = list(ORDERS).index("sleeve_length")
    t[:, sleeve] = np.where(rng.random(400) < 0.98, 0, 1)  # 98 % of rows: the first sleeve value
    common = [r for r in mine_rules(t, ORDERS, min_support=20, min_confidence=0.95)
              if r.then_attribute == "sleeve_length"]
    assert common, "without a lift filter, 'anything implies the common value' is a candidate"
    lifted = mine_rules(t, ORDERS, min_support=20, min_confidence=0.95, min_lift=1.2)
    assert not [r for r in lifted if r.then_attribute == "sleeve_length"]
    assert any(r.if_attribute == "pattern" for r in mine_rules(targets_with_implication(), ORDERS, min_lift=1.2))


def test_a_gain_within_the_validation_noise_is_not_kept():
    rng = np.random.default_rng(5)
    n = 200
    truth = np.stack([rng.integers(0, len(v), n) for v in ORDERS.values()], axis=1)
    logits = {name: rng.normal(size=(n, len(v))) for name, v in ORDERS.items()}
    for a, name in enumerate(ORDERS):
        logits[name][np.arange(n), truth[:, a]] += 4.0
    # exactly one row breaks the rule and the rule fixes it: a one-row gain
    polo = ORDERS["neck"].index("polo")
    long_sleeves = ORDERS["sleeve_length"].index("long sleeves")
    neck, sleeve = list(ORDERS).index("neck"), list(ORDERS).index("sleeve_length")
    rows = np.flatnonzero(truth[:, neck] == polo)
    truth[rows, sleeve] = long_sleeves
    logits["sleeve_length"][rows, long_sleeves] = logits["sleeve_length"][rows].max(axis=1) + 1.0
    logits["sleeve_length"][rows[0]] = 0.0
    logits["sleeve_length"][rows[0], 1 - long_sleeves] = 2.0  # the model is wrong on one of them
    lucky = ConsistencyRule("neck", "polo", "sleeve_length", "long sleeves")
    kept_any, trials_any = select_rules([lucky], CATEGORY, {}, logits, truth, z=0)
    assert kept_any == [lucky] and trials_any[0].score_with > trials_any[0].score_before
    kept, trials = select_rules([lucky], CATEGORY, {}, logits, truth)
    assert kept == [] and trials[0].gain_se > 0
    assert trials[0].score_with - trials[0].score_before < 2 * trials[0].gain_se


REAL_LABELS = Path("/work/shared/meesho/train_labels.csv")


@pytest.mark.skipif(not REAL_LABELS.is_file(), reason=f"the real label table is not at {REAL_LABELS}")
def test_on_the_real_women_tops_labels_lift_keeps_the_informative_rules():
    category = load_taxonomy()["Women Tops & Tunics"]
    orders = {a.name: a.values for a in category.attributes}
    targets = encode_targets([r for r in read_labels(REAL_LABELS) if r.category == category.name], orders)
    before = mine_rules(targets, orders, max_rules=40)
    after = mine_rules(targets, orders, min_lift=1.2, max_rules=40)
    casual = [r for r in before if (r.then_attribute, r.then_value) == ("ocassion", "casual")]
    assert len(casual) > len(before) / 2  # measured: 23 of 33
    assert not [r for r in after if r.then_value == "casual"] and len(after) >= 5  # measured: 10 survive
    graphic = ("print_or_pattern_type", "graphic", "pattern", "printed")
    assert graphic in [(r.if_attribute, r.if_value, r.then_attribute, r.then_value) for r in after]
