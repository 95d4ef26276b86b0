import numpy as np
import pytest

from catalog.decoding import AttributeCalibration, ConsistencyRule, Decoder, predict_rows
from catalog.taxonomy import UnknownValueError, load_taxonomy

MEN = load_taxonomy()["men_tshirts"]


def violates(rule, values):
    """The rule's definition, checked on one row of decoded values."""
    return values.get(rule.if_attribute) == rule.if_value and values.get(rule.then_attribute) != rule.then_value


def logits_for(rows):
    """rows: list of {attribute: {value: logit}}; unspecified logits are 0."""
    out = {}
    for attribute in MEN.attributes:
        array = np.zeros((len(rows), len(attribute.values)))
        for i, row in enumerate(rows):
            for value, logit in row.get(attribute.name, {}).items():
                array[i, attribute.index(value)] = logit
        out[attribute.name] = array
    return out


def test_probabilities_are_calibrated_softmax():
    decoder = Decoder(MEN, {"neck": AttributeCalibration(temperature=2.0, offsets=(0.0, 1.0))})
    probs = decoder.probabilities(logits_for([{"neck": {"polo": 3.0}}]))
    expected = np.exp([1.5, 0.5]) / np.exp([1.5, 0.5]).sum()
    assert np.allclose(probs["neck"][0], expected)
    assert np.allclose(probs["color"][0], 0.25)


def test_without_rules_decoding_is_argmax():
    decoder = Decoder(MEN)
    rows = decoder.decode(decoder.probabilities(logits_for([{"pattern": {"printed": 2.0}}])))
    assert MEN.attribute("pattern").values[rows[0]["pattern"]] == "printed"


def test_joint_decoding_picks_most_probable_combination_that_breaks_no_rule():
    rule = ConsistencyRule("pattern", "solid", "print_or_pattern_type", "solid")
    decoder = Decoder(MEN, rules=(rule,))
    # argmax says pattern=solid (weakly) with print type=typography (strongly): breaks the rule.
    logits = logits_for([{"pattern": {"solid": 0.2, "printed": 0.0},
                          "print_or_pattern_type": {"typography": 3.0, "solid": 0.5}}])
    (row,) = decoder.decode(decoder.probabilities(logits))
    values = {a.name: a.values[row[a.name]] for a in MEN.attributes}
    assert values["pattern"] == "printed" and values["print_or_pattern_type"] == "typography"
    assert not violates(rule, values)


def test_consistent_argmax_is_left_alone():
    rule = ConsistencyRule("pattern", "solid", "print_or_pattern_type", "solid")
    decoder = Decoder(MEN, rules=(rule,))
    logits = logits_for([{"pattern": {"solid": 2.0}, "print_or_pattern_type": {"solid": 2.0}}])
    (row,) = decoder.decode(decoder.probabilities(logits))
    assert row["pattern"] == MEN.attribute("pattern").index("solid")


def brute_force(decoder, probabilities, i):
    """The definition, row by row: over the top candidates of every ruled attribute, the most probable
    combination breaking no rule (first of equals in candidate order); argmax if none is allowed."""
    import itertools

    names = [a.name for a in MEN.attributes]
    row = {name: int(np.argmax(probabilities[name][i])) for name in names}
    ruled = sorted({r.if_attribute for r in decoder.rules} | {r.then_attribute for r in decoder.rules},
                   key=names.index)
    log_p = {name: np.log(probabilities[name][i] + 1e-12) for name in ruled}
    top = [np.argsort(-log_p[name])[: decoder.candidates_per_attribute] for name in ruled]
    best = None
    for combo in itertools.product(*top):
        values = {name: MEN.attribute(name).values[k] for name, k in zip(ruled, combo, strict=True)}
        if any(violates(rule, values) for rule in decoder.rules):
            continue
        total = sum(log_p[name][k] for name, k in zip(ruled, combo, strict=True))
        if best is None or total > best[0]:
            best = (total, combo)
    current = {name: MEN.attribute(name).values[row[name]] for name in ruled}
    if best is not None and any(violates(rule, current) for rule in decoder.rules):
        row.update({name: int(k) for name, k in zip(ruled, best[1], strict=True)})
    return row


def test_batch_decoding_matches_the_row_by_row_definition():
    # Two rules sharing an attribute form one group; random logits break them often.
    rules = (ConsistencyRule("pattern", "solid", "print_or_pattern_type", "solid"),
             ConsistencyRule("print_or_pattern_type", "solid", "neck", "round"))
    decoder = Decoder(MEN, rules=rules)
    rng = np.random.default_rng(7)
    logits = {a.name: rng.standard_normal((300, len(a.values))) * 2 for a in MEN.attributes}
    logits["pattern"][::3, MEN.attribute("pattern").index("solid")] += 4
    probabilities = decoder.probabilities(logits)
    rows = decoder.decode(probabilities)
    changed = sum(row != {n: int(np.argmax(probabilities[n][i])) for n in row} for i, row in enumerate(rows))
    assert changed > 20  # the search really ran
    assert rows == [brute_force(decoder, probabilities, i) for i in range(300)]


def test_rules_naming_values_outside_the_taxonomy_are_rejected():
    with pytest.raises(UnknownValueError, match="'checked'"):
        Decoder(MEN, rules=(ConsistencyRule("pattern", "checked", "neck", "polo"),))


def test_predict_rows_decodes_every_attribute_with_confidence_and_top_k():
    rows = predict_rows(Decoder(MEN), logits_for([{"sleeve_length": {"long sleeves": 4.0}}]))
    sleeve, neck = rows[0]["sleeve_length"], rows[0]["neck"]
    assert sleeve.value == "long sleeves" and sleeve.confidence > 0.9
    # A tie still decodes to a value (the first): abstaining is the service's decision, not the decoder's.
    assert neck.value == MEN.attribute("neck").values[0] and neck.confidence == pytest.approx(0.5)
    assert sleeve.top_k[0][0] == "long sleeves" and len(rows[0]["color"].top_k) == 3


def test_rule_round_trip():
    rule = ConsistencyRule("pattern", "solid", "print_or_pattern_type", "solid", 0.99, 3033)
    assert ConsistencyRule.from_dict(rule.to_dict()) == rule
