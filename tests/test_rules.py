import numpy as np

from catalog.decoding import ConsistencyRule
from catalog.taxonomy import load_taxonomy
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
