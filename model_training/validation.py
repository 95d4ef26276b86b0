"""Validation: logits for a loader, the competition score of decoded predictions, per-attribute reports.

The score is exactly :mod:`catalog.metric`'s: per attribute the harmonic mean of micro- and macro-F1
over labelled rows (macro over the union of true and predicted values), averaged over attributes.
:func:`attribute_hm` is a vectorised copy used inside the calibration search; a test pins it to
``catalog.metric.attribute_score``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from catalog.decoding import Decoder
from catalog.metric import harmonic_mean
from model_training.losses import MaskedMultiTaskLoss
from model_training.runtime import autocast


def attribute_hm(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """HM(micro-F1, macro-F1) on integer labels; rows with y_true < 0 are ignored."""
    labelled = y_true >= 0
    t, p = y_true[labelled], y_pred[labelled]
    if len(t) == 0:
        return 0.0
    tp = np.bincount(t[t == p], minlength=num_classes).astype(np.float64)
    support = np.bincount(t, minlength=num_classes).astype(np.float64)
    predicted = np.bincount(p, minlength=num_classes).astype(np.float64)
    present = (support + predicted) > 0
    f1 = 2 * tp[present] / (support + predicted)[present]
    return harmonic_mean(float(tp.sum() / len(t)), float(f1.mean()))


def decode_indices(decoder: Decoder, logits: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, A) decoded value indices in head order, with the decoder's calibration and rules."""
    names = decoder.category.attribute_names
    rows = decoder.decode(decoder.probabilities(logits))
    return np.array([[row[name] for name in names] for row in rows], dtype=np.int64).reshape(len(rows), len(names))


def attribute_scores(decoder: Decoder, logits: Mapping[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
    """HM per attribute that has labelled rows."""
    predicted = decode_indices(decoder, logits)
    out: dict[str, float] = {}
    for a, attribute in enumerate(decoder.category.attributes):
        if (targets[:, a] >= 0).any():
            out[attribute.name] = attribute_hm(targets[:, a], predicted[:, a], len(attribute.values))
    return out


def mean_attribute_score(scores: Mapping[str, float]) -> float:
    """The competition's category score from :func:`attribute_scores`: their mean (0 when none is scored)."""
    return float(np.mean(list(scores.values()))) if scores else 0.0


def category_score(decoder: Decoder, logits: Mapping[str, np.ndarray], targets: np.ndarray) -> float:
    """The competition's category score: mean HM over attributes with labelled rows."""
    return mean_attribute_score(attribute_scores(decoder, logits, targets))


@torch.no_grad()
def validation_loss(criterion: MaskedMultiTaskLoss, logits: Mapping[str, np.ndarray], targets: np.ndarray,
                    device: torch.device) -> float:
    """The training loss over collected logits, computed on ``device`` (where ``criterion`` lives)."""
    loss, _ = criterion({name: torch.from_numpy(value).to(device) for name, value in logits.items()},
                        torch.from_numpy(targets).to(device))
    return float(loss)


@torch.no_grad()
def collect_logits(model: nn.Module, loader: DataLoader[Any], device: torch.device, attribute_names: Sequence[str],
                   amp_dtype: torch.dtype | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run ``model`` over ``loader`` in eval mode: float32 logits per attribute and the stacked targets."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in attribute_names}
    targets: list[np.ndarray] = []
    for pixels, target in loader:
        with autocast(device, amp_dtype):
            out = model(pixels.to(device, non_blocking=True))
        for name in attribute_names:
            chunks[name].append(out[name].float().cpu().numpy())
        targets.append(target.numpy())
    model.train(was_training)
    logits = {name: np.concatenate(parts) if parts else np.zeros((0, 0), np.float32) for name, parts in chunks.items()}
    return logits, (np.concatenate(targets) if targets else np.zeros((0, len(attribute_names)), np.int64))


def format_attribute_report(scores: Mapping[str, float]) -> str:
    return "  ".join(f"{name}={hm:.3f}" for name, hm in scores.items())
