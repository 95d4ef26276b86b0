"""Proving an exported model computes what the checkpoint computes.

fp32 must match PyTorch to 1e-4 in every logit with identical argmaxes; fp16/int8 report their argmax
agreement and the competition-score drop on labelled validation images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from catalog.dataset import LabelRow
from catalog.decoding import Decoder, predict_rows
from catalog.metric import score

FP32_MAX_ABS_DIFF = 1e-4


@dataclass(frozen=True)
class Parity:
    images: int
    max_abs_diff: float
    argmax_agreement: float
    per_attribute_agreement: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def onnx_session(path: str | Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: ort.InferenceSession, batch: np.ndarray, attribute_names: Sequence[str],
             batch_size: int = 16) -> dict[str, np.ndarray]:
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(batch), batch_size):
        feed = {session.get_inputs()[0].name: batch[start:start + batch_size]}
        chunks.append(session.run(list(attribute_names), feed))
    return {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(attribute_names)}


def run_torch(model: torch.nn.Module, batch: np.ndarray, attribute_names: Sequence[str],
              batch_size: int = 16) -> dict[str, np.ndarray]:
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in attribute_names}
    with torch.no_grad():
        for start in range(0, len(batch), batch_size):
            result = model(torch.from_numpy(batch[start:start + batch_size]))
            ordered = [result[n] for n in attribute_names] if isinstance(result, dict) else list(result)
            for name, tensor in zip(attribute_names, ordered, strict=True):
                outputs[name].append(tensor.float().numpy())
    return {name: np.concatenate(chunks) for name, chunks in outputs.items()}


def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> Parity:
    per_attribute = {
        name: float((reference[name].argmax(-1) == candidate[name].argmax(-1)).mean()) for name in reference
    }
    max_diff = max(float(np.abs(reference[name] - candidate[name]).max()) for name in reference)
    images = len(next(iter(reference.values())))
    agreement = float(np.mean([per_attribute[name] for name in reference]))
    return Parity(images, max_diff, agreement, per_attribute)


def competition_score(decoder: Decoder, logits: Mapping[str, np.ndarray], rows: Sequence[LabelRow]) -> float:
    """Score of the decoded predictions on labelled rows (same decoding as the service)."""
    decoded = predict_rows(decoder, logits)
    predictions = {
        row.id: LabelRow(row.id, row.category, {name: p.value for name, p in prediction.items()})
        for row, prediction in zip(rows, decoded, strict=True)
    }
    return score(list(rows), predictions).score


OOD_FP32_MAX_DIFF = 1e-3
"""fp32 ONNX vs PyTorch: the largest OOD score difference allowed, as a share of the threshold."""
OOD_MAX_FLAG_DISAGREEMENT = 0.05
"""A reduced precision is refused (unless forced) when its flags differ from PyTorch's on more images."""


@dataclass(frozen=True)
class OodParity:
    images: int
    max_diff_over_threshold: float
    flag_agreement: float
    flagged_reference: float
    flagged_candidate: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def compare_ood(reference: np.ndarray, candidate: np.ndarray, threshold: float) -> OodParity:
    """How far an exported model's OOD scores are from PyTorch's, on the decision's scale."""
    flags, candidate_flags = reference > threshold, candidate > threshold
    return OodParity(len(reference), float(np.abs(reference - candidate).max() / abs(threshold)),
                     float((flags == candidate_flags).mean()), float(flags.mean()), float(candidate_flags.mean()))
