"""Catalog-consistency rules mined from training labels and kept only when they help validation.

A rule ``A = a => B = b`` is a candidate when, among training rows labelled for both attributes,
``A = a`` occurs at least ``min_support`` times, is followed by ``B = b`` with at least
``min_confidence``, and its lift (confidence over the share of ``B = b`` among those rows) is at least
``min_lift``. Without the lift filter the real table's top candidates are mostly "X implies
ocassion=casual" (Women Tops & Tunics), true of 98 % of all rows: the model predicts "casual" anyway, and
the rule cannot inform the decoding, only crowd informative ones ("graphic implies printed") out of the
list. Candidates are then tried greedily (most supported first) with the joint decoder of
:mod:`catalog.decoding`; one is kept only if its validation gain exceeds ``z`` standard errors of the gain,
estimated by a paired bootstrap over validation rows (the category score is a harmonic mean of micro- and
macro-F1, which no binomial formula covers; resampling rows with both decodings paired cancels the noise
they share, so the error is that of the difference only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from catalog.decoding import AttributeCalibration, ConsistencyRule, Decoder
from catalog.taxonomy import Category
from model_training.validation import attribute_hm, decode_indices

BOOTSTRAP_SAMPLES = 200
MIN_GAIN_Z = 2.0
"""A rule's gain must exceed this many bootstrap standard errors (about a one-sided 2.5 % test)."""


def mine_rules(targets: np.ndarray, value_orders: Mapping[str, Sequence[str]], *, min_support: int = 20,
               min_confidence: float = 0.95, min_lift: float = 1.0, max_rules: int = 40) -> list[ConsistencyRule]:
    """Candidate implications from (N, A) training targets (-1 missing), most supported first."""
    names = list(value_orders)
    rules: list[ConsistencyRule] = []
    for i, if_name in enumerate(names):
        for j, then_name in enumerate(names):
            if i == j:
                continue
            both = (targets[:, i] >= 0) & (targets[:, j] >= 0)
            if not both.any():
                continue
            ti, tj = targets[both, i], targets[both, j]
            k_then = len(value_orders[then_name])
            marginal = np.bincount(tj, minlength=k_then) / len(tj)
            for a in np.unique(ti):
                following = np.bincount(tj[ti == a], minlength=k_then)
                support = int(following.sum())
                b = int(following.argmax())
                confidence = float(following[b] / support)
                lift = confidence / float(marginal[b])
                if support >= min_support and confidence >= min_confidence and lift >= min_lift:
                    rules.append(ConsistencyRule(if_name, value_orders[if_name][int(a)], then_name,
                                                 value_orders[then_name][b], round(confidence, 4), support))
    rules.sort(key=lambda r: (-r.support, -r.confidence, str(r)))
    return rules[:max_rules]


@dataclass(frozen=True)
class RuleTrial:
    rule: ConsistencyRule
    score_before: float
    score_with: float
    kept: bool
    gain_se: float = 0.0
    """Bootstrap standard error of ``score_with - score_before``."""


def indices_score(targets: np.ndarray, predicted: np.ndarray, sizes: Sequence[int]) -> float:
    """The category score of (N, A) decoded value indices: mean HM over attributes with labelled rows."""
    scores = [attribute_hm(targets[:, a], predicted[:, a], k) for a, k in enumerate(sizes)
              if (targets[:, a] >= 0).any()]
    return float(np.mean(scores)) if scores else 0.0


def paired_bootstrap_se(targets: np.ndarray, before: np.ndarray, after: np.ndarray, sizes: Sequence[int],
                        rng: np.random.Generator, samples: int = BOOTSTRAP_SAMPLES) -> float:
    """Standard error of the score difference ``after - before``, rows resampled with both decodings paired."""
    n = len(targets)
    gains = []
    for _ in range(samples):
        rows = rng.integers(n, size=n)
        gains.append(indices_score(targets[rows], after[rows], sizes) - indices_score(targets[rows], before[rows],
                                                                                       sizes))
    return float(np.std(gains, ddof=1))


def select_rules(candidates: Sequence[ConsistencyRule], category: Category,
                 calibration: Mapping[str, AttributeCalibration], logits: Mapping[str, np.ndarray],
                 targets: np.ndarray, z: float = MIN_GAIN_Z, seed: int = 0,
                 ) -> tuple[list[ConsistencyRule], list[RuleTrial]]:
    """Greedy forward selection on the validation score, a rule kept only for a gain above ``z`` bootstrap
    standard errors (``z=0``: any gain); returns the kept rules and every trial."""
    sizes = [len(a.values) for a in category.attributes]
    rng = np.random.default_rng(seed)
    kept: list[ConsistencyRule] = []
    current = decode_indices(Decoder(category, dict(calibration), ()), logits)
    best = indices_score(targets, current, sizes)
    trials: list[RuleTrial] = []
    for rule in candidates:
        predicted = decode_indices(Decoder(category, dict(calibration), (*kept, rule)), logits)
        score = indices_score(targets, predicted, sizes)
        se = 0.0
        if score > best and z > 0:
            se = paired_bootstrap_se(targets, current, predicted, sizes, rng)
        keep = score > best + max(1e-6, z * se)
        trials.append(RuleTrial(rule, best, score, keep, se))
        if keep:
            kept.append(rule)
            best, current = score, predicted
    return kept, trials
