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


def fit_offsets(logits: np.ndarray, y: np.ndarray, rounds: int = 3, min_gain: float = 1e-6) -> tuple[float, ...]:
    """Additive logit offsets maximising HM(micro-F1, macro-F1) of the argmax on labelled rows."""
    labelled = y >= 0
    z, t = logits[labelled].astype(np.float64), y[labelled]
    k = logits.shape[1]
    offsets = np.zeros(k)
    if len(t) == 0:
        return tuple(offsets.tolist())
    best = attribute_hm(t, (z + offsets).argmax(axis=1), k)
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
    offsets -= offsets.mean()  # softmax is shift-invariant; centring keeps offsets readable
    return tuple(float(v) for v in offsets)


def fit_calibration(logits: Mapping[str, np.ndarray], targets: np.ndarray, attribute_names: Sequence[str],
                    *, offsets: bool = True) -> dict[str, AttributeCalibration]:
    """Temperature and offsets per attribute; offsets are in the *un*-scaled logit space, as
    :class:`catalog.decoding.AttributeCalibration` applies ``(logits + offsets) / temperature``."""
    out: dict[str, AttributeCalibration] = {}
    for a, name in enumerate(attribute_names):
        z, y = logits[name], targets[:, a]
        temperature = fit_temperature(z, y)
        fitted = fit_offsets(z, y) if offsets else ()
        out[name] = AttributeCalibration(temperature, fitted)
    return out
