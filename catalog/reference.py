"""Recorded reference outputs: what the exported model must answer for a fixed input, kept in its manifest so
a runtime can prove at load, on the machine that serves, that it computes what export verified.

Export runs the checkpoint (PyTorch, fp32) on :func:`reference_batch` and writes every output (logits and
the OOD score) under ``manifest.verification["reference"]``; a backend that loads the model runs the same
batch and compares with :func:`compare_reference` at the tolerance of the arithmetic it runs in.
The batch is computed from a formula, not drawn from a random generator, so that it is the same with any
NumPy version; it is smooth like a photo and spans the normalised pixel range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from catalog.preprocessing import PreprocessSpec

REFERENCE_KEY = "reference"
"""Where in ``manifest.verification`` the recorded outputs are."""
REFERENCE_IMAGES = 2


@dataclass(frozen=True)
class Tolerance:
    """How far a runtime's outputs may be from the recorded ones: ``share`` of the largest recorded
    magnitude (at least 1) for logits, ``share`` of the threshold for the OOD score. So an argmax whose
    recorded margin exceeds twice that (or a flag that far from the threshold) cannot change."""

    share: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(1e-3),
    # Measured on ConvNeXt (CPU autocast): fp16 logits stay within ~0.3 % of their range, bf16 (8 mantissa
    # bits) within ~2 %; a bound of a few times that catches a wrong model (differences of order 100 %).
    "fp16": Tolerance(1e-2),
    "bf16": Tolerance(5e-2),
}


def reference_batch(spec: PreprocessSpec, images: int = REFERENCE_IMAGES) -> np.ndarray:
    """A deterministic ``(images, 3, H, W)`` float32 batch at the spec's size, values in about [-2, 2]."""
    n, c, y, x = np.meshgrid(np.arange(images), np.arange(3), np.arange(spec.height), np.arange(spec.width),
                             indexing="ij", sparse=True)
    phase = 0.05 * (x + 1) * (c + 1) + 0.031 * (y + 1) * (n + 2) + 0.7 * n
    return (2.0 * np.sin(phase) * np.cos(0.013 * (x - y) * (c + 1))).astype(np.float32)


def record(outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """What export writes under ``verification["reference"]``."""
    first = next(iter(outputs.values()))
    return {"images": len(first), "outputs": {name: np.asarray(v, np.float64).round(7).tolist()
                                              for name, v in outputs.items()}}


def recorded(verification: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The recorded outputs of a manifest's verification, or None when it has none (exported before them)."""
    entry = verification.get(REFERENCE_KEY)
    if not entry:
        return None
    return {name: np.asarray(values, dtype=np.float32) for name, values in entry["outputs"].items()}


def compare_reference(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                      tolerance: Tolerance, ood: tuple[str, float] | None = None) -> list[str]:
    """Each output that is off beyond ``tolerance``, with its numbers; empty when all agree. ``ood`` names
    the OOD output and its threshold, which is compared on the threshold's scale."""
    problems = []
    for name, expected in reference.items():
        got = candidate.get(name)
        if got is None or got.shape != expected.shape:
            problems.append(f"{name}: shape {None if got is None else got.shape}, recorded {expected.shape}")
            continue
        if ood is not None and name == ood[0]:
            problems += _score_problems(name, expected, got, ood[1], tolerance)
        else:
            problems += _logit_problems(name, expected, got, tolerance)
    return problems


def _logit_problems(name: str, expected: np.ndarray, got: np.ndarray, tolerance: Tolerance) -> list[str]:
    bound = tolerance.share * max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(expected - got).max())
    return [f"{name}: max |diff| {diff:.3g} > {bound:.3g}"] if diff > bound else []


def _score_problems(name: str, expected: np.ndarray, got: np.ndarray, threshold: float,
                    tolerance: Tolerance) -> list[str]:
    diff = float(np.abs(expected - got).max()) / (abs(threshold) or 1.0)
    return [f"{name}: max |diff| {diff:.3g} of the threshold > {tolerance.share:.3g}"] \
        if diff > tolerance.share else []
