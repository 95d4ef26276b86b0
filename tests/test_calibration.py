import numpy as np

from catalog.metric import attribute_score
from model_training.calibration import fit_calibration, fit_offsets, fit_temperature
from model_training.validation import attribute_hm


def test_attribute_hm_matches_the_competition_metric():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    y[:10] = -1  # unlabelled rows are ignored
    reference = attribute_score("x", [str(v) for v in y[10:]], [str(v) for v in p[10:]])
    assert attribute_hm(y, p, 4) == reference.hm


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    true_logits = rng.normal(size=(2000, 3))
    true_logits[np.arange(2000), y] += 1.0
    # labels drawn from softmax(true_logits); the model reports 3x sharper logits
    probs = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in probs])
    assert 2.0 <= fit_temperature(3 * true_logits, labels) <= 4.5


def test_offsets_raise_macro_f1_on_a_biased_model():
    rng = np.random.default_rng(1)
    n = 600
    y = np.where(rng.random(n) < 0.8, 0, rng.integers(1, 3, n))
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.5
    logits[:, 0] += 2.0  # the model is biased toward the majority class
    before = attribute_hm(y, logits.argmax(1), 3)
    offsets = np.asarray(fit_offsets(logits, y, per_class_min_rows=30))
    after = attribute_hm(y, (logits + offsets).argmax(1), 3)
    assert after > before + 0.05
    assert offsets[0] < offsets[1:].min()


def test_fit_calibration_gives_one_entry_per_attribute():
    rng = np.random.default_rng(2)
    logits = {"a": rng.normal(size=(50, 3)), "b": rng.normal(size=(50, 2))}
    targets = np.stack([rng.integers(0, 3, 50), np.full(50, -1)], axis=1)
    calibration = fit_calibration(logits, targets, ["a", "b"])
    assert len(calibration["a"].offsets) == 3
    assert calibration["b"].temperature == 1.0 and calibration["b"].offsets == (0.0, 0.0)


def test_small_validation_split_only_gets_the_logit_adjustment():
    rng = np.random.default_rng(4)
    n = 40
    y = np.where(rng.random(n) < 0.8, 0, rng.integers(1, 3, n))
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.5
    logits[:, 0] += 2.0
    prior = np.log(np.array([0.8, 0.1, 0.1]))
    offsets = np.asarray(fit_offsets(logits, y, prior, per_class_min_rows=30))
    # 40 rows < 30 per class * 3 classes: offsets are -tau * log(prior), centred, for some tau
    centred = -(prior - prior.mean())
    tau = offsets[1] / centred[1] if offsets.any() else 0.0
    np.testing.assert_allclose(offsets, tau * centred, atol=1e-9)
    assert attribute_hm(y, (logits + offsets).argmax(1), 3) >= attribute_hm(y, logits.argmax(1), 3)
