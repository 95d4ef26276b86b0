import numpy as np
import torch

from catalog.decoding import Decoder
from catalog.taxonomy import load_taxonomy
from model_training.config import TrainConfig
from model_training.decoding_tuning import HeadLogits, tune_decoding
from model_training.losses import class_counts
from model_training.model import value_orders_for
from model_training.runtime import Runtime
from model_training.validation import category_score

MEN = load_taxonomy()["men_tshirts"]
CPU = Runtime(torch.device("cpu"))


def noisy_heads(n=80, seed=0):
    """Logits that mostly point at the true value, with some rows wrong and some labels missing."""
    rng = np.random.default_rng(seed)
    orders = value_orders_for(MEN)
    targets = np.stack([rng.integers(0, len(v), n) for v in orders.values()], axis=1)
    targets[rng.random(targets.shape) < 0.1] = -1
    logits = {}
    for a, (name, values) in enumerate(orders.items()):
        z = rng.standard_normal((n, len(values)))
        z[np.arange(n), np.maximum(targets[:, a], 0)] += 1.0
        logits[name] = z
    raw = category_score(Decoder(MEN), logits, targets)
    return HeadLogits(logits, targets, raw, raw), targets


def test_without_calibration_or_rules_the_score_is_the_raw_one(capsys):
    heads, targets = noisy_heads()
    counts = class_counts(targets, [len(a.values) for a in MEN.attributes])
    tuned = tune_decoding(TrainConfig(calibrate=False, rules=False), CPU, MEN, heads, targets, counts)
    assert tuned.calibration == {} and tuned.rules == []
    assert tuned.score_calibrated == tuned.score_rules == heads.score_t2
    assert "calibration" in capsys.readouterr().out


def test_each_tuning_step_never_lowers_the_validation_score():
    heads, targets = noisy_heads(seed=1)
    counts = class_counts(targets, [len(a.values) for a in MEN.attributes])
    cfg = TrainConfig(rule_min_support=3, rule_min_confidence=0.0)
    tuned = tune_decoding(cfg, CPU, MEN, heads, targets, counts)
    assert set(tuned.calibration) == set(MEN.attribute_names)
    assert tuned.score_calibrated >= heads.score_t2 - 1e-12
    assert tuned.score_rules >= tuned.score_calibrated - 1e-12
