"""Per-attribute decoding calibration fitted on the validation split.

- **Temperature** minimises the validation negative log-likelihood (it does not move the argmax, but
  it makes the confidences honest, which the joint decoding and the service's abstention use).
- **Class-prior offsets** are added to the logits and chosen by coordinate ascent to maximise the
  harmonic mean of micro- and macro-F1: macro-F1 rewards predicting rare classes more often than the
  likelihood-optimal argmax does. Each offset only moves when it raises the score, so the fit can never
  lower the validation score it is judged on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from catalog.decoding import AttributeCalibration
from model_training.validation import attribute_hm

TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(8.0), 41))
OFFSET_STEPS = np.linspace(-3.0, 3.0, 25)
TAUS = np.linspace(0.25, 2.0, 8)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = logits.astype(np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The grid temperature with the lowest NLL on labelled rows (1.0 when there are none)."""
    labelled = y >= 0
    if not labelled.any():
        return 1.0
    losses = [nll(logits[labelled], y[labelled], float(t)) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def fit_offsets(logits: np.ndarray, y: np.ndarray, log_prior: np.ndarray | None = None, *,
                per_class_min_rows: int = 30, rounds: int = 3) -> tuple[float, ...]:
    """Additive logit offsets maximising HM(micro-F1, macro-F1) of the argmax on labelled rows.

    First the one-parameter logit adjustment ``-tau * log(prior)`` (tau on a grid), which a small
    validation split cannot overfit much; then, only when every class has ``per_class_min_rows``
    labelled validation rows on average, per-class coordinate ascent. A change is kept only if it
    wins at least one more row's worth of score (``1 / n``), not a rounding-level gain.
    """
    labelled = y >= 0
    z, t = logits[labelled].astype(np.float64), y[labelled]
    k = logits.shape[1]
    offsets = np.zeros(k)
    if len(t) == 0:
        return tuple(offsets.tolist())
    min_gain = 1.0 / len(t)
    best = attribute_hm(t, z.argmax(axis=1), k)
    if log_prior is not None:
        for tau in TAUS:
            candidate = -tau * np.asarray(log_prior, dtype=np.float64)
            score = attribute_hm(t, (z + candidate).argmax(axis=1), k)
            if score > best + min_gain:
                best, offsets = score, candidate
    if len(t) >= per_class_min_rows * k:
        for _ in range(rounds):
            improved = False
            for c in range(k):
                current = offsets[c]
                for step in OFFSET_STEPS:
                    offsets[c] = step
                    score = attribute_hm(t, (z + offsets).argmax(axis=1), k)
                    if score > best + min_gain:
                        best, current, improved = score, step, True
                offsets[c] = current
            if not improved:
                break
    offsets = offsets - offsets.mean()  # softmax is shift-invariant; centring keeps offsets readable
    return tuple(float(v) for v in offsets)


def fit_calibration(logits: Mapping[str, np.ndarray], targets: np.ndarray, attribute_names: Sequence[str],
                    *, log_priors: Sequence[np.ndarray] | None = None, offsets: bool = True,
                    per_class_min_rows: int = 30) -> dict[str, AttributeCalibration]:
    """Temperature and offsets per attribute; offsets are in the *un*-scaled logit space, as
    :class:`catalog.decoding.AttributeCalibration` applies ``(logits + offsets) / temperature``.
    ``log_priors`` (per attribute, from the training labels) enable the logit-adjustment step."""
    out: dict[str, AttributeCalibration] = {}
    for a, name in enumerate(attribute_names):
        z, y = logits[name], targets[:, a]
        temperature = fit_temperature(z, y)
        prior = log_priors[a] if log_priors is not None else None
        fitted = fit_offsets(z, y, prior, per_class_min_rows=per_class_min_rows) if offsets else ()
        out[name] = AttributeCalibration(temperature, fitted)
    return out
