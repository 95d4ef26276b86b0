"""Out-of-distribution scores: how unlike the training images an image is, from the backbone's pooled
features (``CategoryModel.pooled``), fitted once at the end of training and exported inside the ONNX graph.

Methods (chosen by measurement, BENCHMARKS.md "Unfamiliar images"):

- ``mahalanobis``: one Gaussian over the training images' pooled features (mean and a shared covariance,
  shrunk toward its mean variance so a few hundred images give a well-conditioned inverse); the score is the
  squared Mahalanobis distance, computed in the graph as ``|(f - mean) @ W|^2`` with ``W W^T`` the precision.
- ``knn``: cosine distance from the L2-normalised feature to its ``k``-th nearest training feature (a bank of
  every training image, stored with the checkpoint).
- ``energy``: ``-logsumexp`` of each head's logits, averaged over the heads (no statistics).

Every score grows with unfamiliarity. The threshold is the ``1 - false_alarm_rate`` quantile of the scores of
held-out in-distribution images (the validation split, which the backbone never trained on), so about that
share of in-distribution images is flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from catalog.manifest import OOD_METHODS, OOD_OUTPUT
from model_training.config import TrainConfig
from model_training.model import CategoryModel

OOD_WEIGHTS_NAME = "ood.safetensors"
DEFAULT_METHOD = "mahalanobis"
DEFAULT_FALSE_ALARM_RATE = 0.05
DEFAULT_K = 5
SHRINKAGE = 0.1
"""Share of the covariance replaced by its mean variance (times the identity) before inverting."""


class OodDetector(nn.Module):
    """``forward(pooled[N, C], logits) -> score[N]``; plain tensor algebra, so it exports to ONNX as is."""

    mean: Tensor
    whitener: Tensor
    bank: Tensor

    def __init__(self, method: str, stats: Mapping[str, Tensor], *, k: int = DEFAULT_K) -> None:
        super().__init__()
        if method not in OOD_METHODS:
            raise ValueError(f"unknown OOD method {method!r}; known: {', '.join(OOD_METHODS)}")
        self.method = method
        self.k = k
        needed = {"mahalanobis": ("mean", "whitener"), "knn": ("bank",), "energy": ()}[method]
        missing = [name for name in needed if name not in stats]
        if missing:
            raise ValueError(f"{method} detector lacks statistics {missing}")
        for name in needed:
            self.register_buffer(name, stats[name].float().contiguous())
        if method == "knn" and not 1 <= k <= len(stats["bank"]):
            raise ValueError(f"k={k} needs 1..{len(stats['bank'])} training features")

    def stats(self) -> dict[str, Tensor]:
        return {name: buffer.detach().cpu().contiguous() for name, buffer in self.named_buffers()}

    def forward(self, pooled: Tensor, logits: Mapping[str, Tensor]) -> Tensor:
        if self.method == "mahalanobis":
            z = (pooled - self.mean) @ self.whitener
            return (z * z).sum(dim=-1)
        if self.method == "knn":
            similarity = F.normalize(pooled, dim=-1) @ self.bank.t()
            return 1.0 - torch.topk(similarity, self.k, dim=-1).values[:, -1]
        return -torch.stack([torch.logsumexp(value, dim=-1) for value in logits.values()]).mean(dim=0)


def fit_detector(method: str, train_pooled: Tensor, *, k: int = DEFAULT_K) -> OodDetector:
    """A detector fitted on the training images' pooled features ``(N, C)``."""
    features = train_pooled.double()
    if method == "mahalanobis":
        mean = features.mean(dim=0)
        centred = features - mean
        covariance = centred.t() @ centred / max(1, len(features) - 1)
        scale = covariance.diagonal().mean().clamp_min(1e-12)
        shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * scale * torch.eye(len(mean), dtype=torch.float64)
        # precision = W W^T with W = L^-T for the Cholesky factor L of the covariance.
        lower = torch.linalg.cholesky(shrunk)
        eye = torch.eye(len(mean), dtype=torch.float64)
        whitener = torch.linalg.solve_triangular(lower, eye, upper=False).t()
        return OodDetector(method, {"mean": mean, "whitener": whitener})
    if method == "knn":
        return OodDetector(method, {"bank": F.normalize(features, dim=-1)}, k=min(k, len(features)))
    return OodDetector(method, {})


def threshold_at(scores: np.ndarray, false_alarm_rate: float) -> float:
    """The score above which ``false_alarm_rate`` of these in-distribution scores lie."""
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be between 0 and 1, got {false_alarm_rate}")
    if len(scores) == 0:
        raise ValueError("no held-out images to set the OOD threshold on")
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1 - false_alarm_rate))


@dataclass
class FittedOod:
    """A detector and what the checkpoint and the manifest say about it."""

    detector: OodDetector
    threshold: float
    false_alarm_rate: float
    calibration_images: int
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """``CheckpointInfo.ood``: the method, its parameters, the threshold and where it came from."""
        parameters = {"k": self.detector.k} if self.detector.method == "knn" else {}
        return {"method": self.detector.method, "parameters": parameters, "threshold": self.threshold,
                "false_alarm_rate": self.false_alarm_rate, "calibration_images": self.calibration_images,
                "output": OOD_OUTPUT, **self.extra}


def fit_ood(method: str, train_pooled: Tensor, val_pooled: Tensor, val_logits: Mapping[str, Tensor],
            false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE, *, k: int = DEFAULT_K) -> FittedOod:
    """Fit on the training features, set the threshold on the held-out validation features."""
    detector = fit_detector(method, train_pooled, k=k).eval()
    with torch.no_grad():
        scores = detector(val_pooled.float(), val_logits).numpy()
    return FittedOod(detector, threshold_at(scores, false_alarm_rate), false_alarm_rate, len(scores),
                     {"train_images": len(train_pooled)})


def save_ood(run_dir: str | Path, fitted: FittedOod) -> dict[str, Any]:
    """Write the detector's statistics beside the weights; returns what ``checkpoint.json`` records."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    path = Path(run_dir) / OOD_WEIGHTS_NAME
    stats = fitted.detector.stats() or {"empty": torch.zeros(1)}
    tmp = path.with_suffix(".tmp")
    save_file(stats, str(tmp), metadata={"method": fitted.detector.method})
    tmp.replace(path)
    return fitted.describe()


def load_ood(run_dir: str | Path, description: Mapping[str, Any] | None) -> OodDetector | None:
    """The checkpoint's detector, or None for a checkpoint trained without one."""
    if not description:
        return None
    path = Path(run_dir) / OOD_WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the checkpoint describes an OOD detector but its statistics are missing")
    stats = {k: v for k, v in load_file(str(path)).items() if k != "empty"}
    k = int(dict(description.get("parameters") or {}).get("k", DEFAULT_K))
    return OodDetector(str(description["method"]), stats, k=k).eval()


class Scored(nn.Module):
    """A :class:`~model_training.model.CategoryModel` and its detector as one model: ``forward`` returns the
    attribute logits plus ``OOD_OUTPUT`` (N,), from one backbone pass. With ``tta_flip`` the logits are
    averaged with the mirrored image's and the score is the unflipped image's."""

    def __init__(self, model: CategoryModel, detector: OodDetector, *, tta_flip: bool = False) -> None:
        super().__init__()
        self.model = model
        self.detector = detector
        self.tta_flip = tta_flip

    def forward(self, pixels: Tensor) -> dict[str, Tensor]:
        n = pixels.shape[0]
        batch = torch.cat([pixels, torch.flip(pixels, dims=[3])]) if self.tta_flip else pixels
        features = self.model.features(batch)
        logits = self.model.forward_heads(features)
        if self.tta_flip:
            logits = {name: (value[:n] + value[n:]) / 2 for name, value in logits.items()}
            features = features[:n]
        return {**logits, OOD_OUTPUT: self.detector(self.model.pooled(features), logits)}


@torch.no_grad()
def pooled_and_logits(model: CategoryModel, loader: DataLoader[Any],
                      device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
    """Pooled features ``(N, C)`` and every head's logits of a loader's images, in fp32 and eval mode (the
    same computation the exported graph does)."""
    model.eval()
    pooled: list[Tensor] = []
    logits: dict[str, list[Tensor]] = {}
    for pixels, *_ in loader:
        features = model.features(pixels.to(device))
        pooled.append(model.pooled(features).float().cpu())
        for name, value in model.forward_heads(features).items():
            logits.setdefault(name, []).append(value.float().cpu())
    return torch.cat(pooled), {name: torch.cat(parts) for name, parts in logits.items()}


def fit_category_ood(cfg: TrainConfig, model: CategoryModel, train_set: Dataset[Any], val_loader: DataLoader[Any],
                     device: torch.device, log: Callable[[str], None]) -> FittedOod | None:
    """The end of training: fit ``cfg.ood`` on the training images, its threshold on the validation split."""
    if cfg.ood == "none":
        return None
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size * 2, num_workers=cfg.num_workers)
    train_pooled, _ = pooled_and_logits(model, train_loader, device)
    val_pooled, val_logits = pooled_and_logits(model, val_loader, device)
    fitted = fit_ood(cfg.ood, train_pooled, val_pooled, val_logits, cfg.ood_false_alarm_rate, k=cfg.ood_k)
    log(f"OOD detector {cfg.ood}: fitted on {len(train_pooled)} training images, threshold {fitted.threshold:.4g} "
        f"flags {cfg.ood_false_alarm_rate:.0%} of {fitted.calibration_images} validation images")
    return fitted
