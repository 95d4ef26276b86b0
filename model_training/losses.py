"""Losses: cross-entropy masked on missing labels (optionally class-balanced or logit-adjusted), and MMD.

Every row trains exactly the heads it has labels for. Masking is done with tensor arithmetic (no
boolean indexing), so a batch where an attribute is wholly unlabelled still yields a zero loss that is
connected to the head's graph (DDP requires every parameter to take part).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MISSING = -1


def class_counts(targets: np.ndarray, num_classes: Sequence[int]) -> list[np.ndarray]:
    """Per attribute, the count of each class among labelled rows (targets: (N, A), -1 missing)."""
    return [np.bincount(targets[:, i][targets[:, i] >= 0], minlength=k).astype(np.float64)
            for i, k in enumerate(num_classes)]


def balanced_weights(counts: np.ndarray, beta: float = 0.999) -> np.ndarray:
    """Class-balanced weights from the effective number of samples (Cui et al., 2019), mean 1."""
    effective = (1.0 - np.power(beta, np.maximum(counts, 1.0))) / (1.0 - beta)
    weights = 1.0 / effective
    return weights * len(counts) / weights.sum()


def log_priors(counts: np.ndarray) -> np.ndarray:
    """log class priors with add-one smoothing, for logit adjustment (Menon et al., 2021)."""
    return np.log((counts + 1.0) / (counts.sum() + len(counts)))


class MaskedMultiTaskLoss(torch.nn.Module):
    """Sum over attributes of the mean cross-entropy over that attribute's labelled rows."""

    def __init__(self, attribute_names: Sequence[str], counts: Sequence[np.ndarray] | None = None,
                 kind: str = "ce", tau: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if kind not in ("ce", "balanced", "logit_adjusted"):
            raise ValueError(f"unknown loss {kind!r}; allowed: 'ce', 'balanced', 'logit_adjusted'")
        if kind != "ce" and counts is None:
            raise ValueError(f"loss {kind!r} needs the training class counts")
        self.attribute_names = tuple(attribute_names)
        self.kind = kind
        self.label_smoothing = label_smoothing
        for i in range(len(self.attribute_names)):
            k = len(counts[i]) if counts is not None else 0
            weight = torch.as_tensor(balanced_weights(counts[i]), dtype=torch.float32) if kind == "balanced" \
                and counts is not None else torch.ones(k)
            adjust = torch.as_tensor(tau * log_priors(counts[i]), dtype=torch.float32) if kind == "logit_adjusted" \
                and counts is not None else torch.zeros(k)
            self.register_buffer(f"weight_{i}", weight, persistent=False)
            self.register_buffer(f"adjust_{i}", adjust, persistent=False)

    def attribute_loss(self, i: int, logits: Tensor, target: Tensor) -> Tensor:
        mask = (target >= 0).to(logits.dtype)
        logits = logits.float()
        if self.kind == "logit_adjusted":
            logits = logits + getattr(self, f"adjust_{i}")
        weight = getattr(self, f"weight_{i}") if self.kind == "balanced" else None
        per_row = F.cross_entropy(logits, target.clamp(min=0), weight=weight, reduction="none",
                                  label_smoothing=self.label_smoothing)
        return (per_row * mask).sum() / mask.sum().clamp(min=1.0)

    def forward(self, logits: Mapping[str, Tensor], targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``targets``: (N, A) long, -1 where missing. Returns the total and the per-attribute losses."""
        parts = {name: self.attribute_loss(i, logits[name], targets[:, i])
                 for i, name in enumerate(self.attribute_names)}
        return torch.stack(list(parts.values())).sum(), parts


def mmd(source: Tensor, target: Tensor, bandwidths: Sequence[float] = (0.5, 1.0, 2.0, 4.0)) -> Tensor:
    """Squared maximum mean discrepancy with a sum of Gaussian kernels, as a differentiable tensor.

    Bandwidths are relative to the median pairwise squared distance (detached, so it only sets the
    scale). The published version called ``.item()`` on the kernel sums, so its MMD had no gradient.
    """
    x = torch.cat([source, target]).float()
    d2 = torch.cdist(x, x).pow(2)
    scale = d2.detach().median().clamp(min=1e-6)
    kernel = sum(torch.exp(-d2 / (scale * b)) for b in bandwidths)
    assert isinstance(kernel, Tensor)
    n = source.shape[0]
    k_ss, k_tt, k_st = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return k_ss.mean() + k_tt.mean() - 2 * k_st.mean()
