"""Catalog-consistency rules mined from training labels and kept only when they help validation.

A rule ``A = a => B = b`` is a candidate when, among training rows labelled for both attributes,
``A = a`` occurs at least ``min_support`` times and is followed by ``B = b`` with at least
``min_confidence``. Candidates are then tried greedily (most supported first) with the joint decoder
of :mod:`catalog.decoding`; one is kept only if it raises the validation score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from catalog.decoding import AttributeCalibration, ConsistencyRule, Decoder
from catalog.taxonomy import Category
from model_training.validation import category_score


def mine_rules(targets: np.ndarray, value_orders: Mapping[str, Sequence[str]], *, min_support: int = 20,
               min_confidence: float = 0.95, max_rules: int = 40) -> list[ConsistencyRule]:
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
            for a in np.unique(ti):
                following = np.bincount(tj[ti == a], minlength=k_then)
                support = int(following.sum())
                b = int(following.argmax())
                confidence = float(following[b] / support)
                if support >= min_support and confidence >= min_confidence:
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


def select_rules(candidates: Sequence[ConsistencyRule], category: Category,
                 calibration: Mapping[str, AttributeCalibration], logits: Mapping[str, np.ndarray],
                 targets: np.ndarray, min_gain: float = 1e-6) -> tuple[list[ConsistencyRule], list[RuleTrial]]:
    """Greedy forward selection on the validation score; returns the kept rules and every trial."""
    kept: list[ConsistencyRule] = []
    best = category_score(Decoder(category, dict(calibration), ()), logits, targets)
    trials: list[RuleTrial] = []
    for rule in candidates:
        score = category_score(Decoder(category, dict(calibration), (*kept, rule)), logits, targets)
        keep = score > best + min_gain
        trials.append(RuleTrial(rule, best, score, keep))
        if keep:
            kept.append(rule)
            best = score
    return kept, trials
