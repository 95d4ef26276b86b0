"""Decoding tuned for the metric on the validation split, after T2: calibration (temperature + class
offsets), then the mined consistency rules that raise the validation score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from catalog.decoding import AttributeCalibration, ConsistencyRule, Decoder
from catalog.taxonomy import Category
from model_training.calibration import fit_calibration
from model_training.config import TrainConfig
from model_training.losses import log_priors
from model_training.model import value_orders_for
from model_training.rules import mine_rules, select_rules
from model_training.runtime import Runtime, log
from model_training.validation import category_score


@dataclass(frozen=True)
class HeadLogits:
    """The final heads' validation logits and targets, with the raw-decoding score before and after T2."""

    logits: dict[str, np.ndarray]
    targets: np.ndarray
    score_t1: float
    score_t2: float


@dataclass(frozen=True)
class TunedDecoding:
    calibration: dict[str, AttributeCalibration]
    rules: list[ConsistencyRule]
    score_calibrated: float
    score_rules: float
    """The validation score with calibration and the kept rules: the checkpoint's score."""


def tune_decoding(cfg: TrainConfig, runtime: Runtime, category: Category, heads: HeadLogits,
                  train_targets: np.ndarray, counts: Sequence[np.ndarray]) -> TunedDecoding:
    """Fit on the validation split's ``heads``; rules are mined from the training rows' ``train_targets``
    and ``counts`` (per attribute, the training class counts) give the calibration its priors."""
    logits, targets = heads.logits, heads.targets
    value_orders = value_orders_for(category)
    priors = [log_priors(c) for c in counts]
    calibration = fit_calibration(logits, targets, list(value_orders), log_priors=priors) if cfg.calibrate else {}
    score_cal = category_score(Decoder(category, calibration), logits, targets)
    log(runtime, f"{category.slug} calibration (temperature + class offsets): {heads.score_t2:.4f} -> {score_cal:.4f}")
    if not cfg.rules:
        return TunedDecoding(calibration, [], score_cal, score_cal)
    candidates = mine_rules(train_targets, value_orders, min_support=cfg.rule_min_support,
                            min_confidence=cfg.rule_min_confidence, min_lift=cfg.rule_min_lift)
    rules, trials = select_rules(candidates, category, calibration, logits, targets, seed=cfg.seed)
    score_rules = category_score(Decoder(category, calibration, tuple(rules)), logits, targets)
    for trial in trials:
        log(runtime, f"    rule {trial.rule} (conf {trial.rule.confidence:.3f}, support {trial.rule.support}): "
                     f"{trial.score_before:.4f} -> {trial.score_with:.4f} (bootstrap s.e. {trial.gain_se:.4f}) "
                     f"{'kept' if trial.kept else 'dropped'}")
    log(runtime, f"{category.slug} consistency rules: {len(rules)} of {len(candidates)} kept: "
                 f"{score_cal:.4f} -> {score_rules:.4f}")
    return TunedDecoding(calibration, rules, score_cal, score_rules)
