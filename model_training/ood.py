"""Out-of-distribution scores: how unlike the training images an image is, from the backbone's pooled
features (``CategoryModel.pooled``), fitted once at the end of training and exported inside the ONNX graph.

Methods (chosen by measurement, BENCHMARKS.md "Unfamiliar images"):

- ``mahalanobis``: one Gaussian over the training images' pooled features (mean and a shared covariance,
  shrunk toward its mean variance so a few hundred images give a well-conditioned inverse); the score is the
  squared Mahalanobis distance, computed in the graph as ``|(f - mean) @ W|^2`` with ``W W^T`` the precision.
- ``knn``: cosine distance from the L2-normalised feature to its ``k``-th nearest training feature (a bank of
  every training image, stored with the checkpoint).
- ``energy``: ``-logsumexp`` of each head's logits, averaged over the heads (no statistics).
- ``composite`` (the default): the largest of up to three checks, each standardised by its held-out scores
  (``(score - median) / (95th percentile - median)``) so that one threshold serves them all:

  * ``features``: the ``mahalanobis`` score;
  * ``category``: relative Mahalanobis distance against the catalog's other categories (class means under one
    shared covariance, fitted on this category's training features and on other categories' training images
    seen through this model): the distance to this category's mean minus the distance to the nearest other
    category's mean, so an upload filed under the wrong category scores high;
  * ``input``: Mahalanobis distance of the pixels' own statistics (:func:`input_statistics`), which tells a
    blank, noisy or heavily blurred upload from a product photo whatever the backbone makes of it.

  Without other categories in the training data the ``category`` check is omitted, and the checkpoint and
  manifest say so (``parameters.omitted``).

Every score grows with unfamiliarity. The threshold is the ``1 - false_alarm_rate`` quantile of the scores of
held-out in-distribution images (the validation split, which the backbone never trained on), so about that
share of in-distribution images is flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from catalog.dataset import LabelRow
from catalog.manifest import OOD_METHODS, OOD_OUTPUT
from catalog.preprocessing import PreprocessSpec
from model_training.config import TrainConfig
from model_training.data import ImageDataset
from model_training.model import CategoryModel

OOD_WEIGHTS_NAME = "ood.safetensors"
DEFAULT_METHOD = "composite"
DEFAULT_FALSE_ALARM_RATE = 0.05
DEFAULT_K = 5
SHRINKAGE = 0.1
"""Share of the covariance replaced by its mean variance (times the identity) before inverting."""
CHECKS = ("features", "category", "input")
"""The composite detector's checks, in the order of its ``centre`` and ``spread`` statistics."""


def input_statistics(pixels: Tensor) -> Tensor:
    """``(N, 3, H, W)`` normalised pixels -> ``(N, 9)``: each channel's mean and log standard deviation, and the
    log mean absolute horizontal and vertical step and Laplacian of the grey image (the texture scale, which
    noise raises and blur lowers). Plain tensor algebra, so it runs inside the exported graph."""
    mean = pixels.mean(dim=(2, 3))
    spread = torch.sqrt(((pixels - mean[:, :, None, None]) ** 2).mean(dim=(2, 3)))
    grey = pixels.mean(dim=1)
    dx = (grey[:, :, 1:] - grey[:, :, :-1]).abs().mean(dim=(1, 2))
    dy = (grey[:, 1:, :] - grey[:, :-1, :]).abs().mean(dim=(1, 2))
    laplacian = (4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] - grey[:, 1:-1, :-2]
                 - grey[:, 1:-1, 2:]).abs().mean(dim=(1, 2))
    texture = torch.stack([dx, dy, laplacian], dim=1)
    return torch.cat([mean, torch.log(spread + 1e-3), torch.log(texture + 1e-4)], dim=1)


def gaussian_fit(groups: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Class means ``(K, C)`` and the whitener ``W`` (``W W^T`` the precision) of one covariance shared by the
    groups, shrunk toward its mean variance so a few hundred rows give a well-conditioned inverse."""
    groups = [group.double() for group in groups]
    means = torch.stack([group.mean(dim=0) for group in groups])
    centred = torch.cat([group - mean for group, mean in zip(groups, means, strict=True)])
    covariance = centred.t() @ centred / max(1, len(centred) - len(groups))
    eye = torch.eye(means.shape[1], dtype=torch.float64)
    scale = covariance.diagonal().mean().clamp_min(1e-12)
    lower = torch.linalg.cholesky((1 - SHRINKAGE) * covariance + SHRINKAGE * scale * eye)
    return means, torch.linalg.solve_triangular(lower, eye, upper=False).t()


def squared_distances(x: Tensor, means: Tensor, whitener: Tensor) -> Tensor:
    """``(N, K)`` squared Mahalanobis distances of ``x (N, C)`` to each of ``means (K, C)``."""
    z = (x.unsqueeze(1) - means.unsqueeze(0)) @ whitener  # direct, not expanded: fp32 keeps its precision
    return (z * z).sum(dim=-1)


class OodDetector(nn.Module):
    """``forward(pooled[N, C], logits, pixels[N, 3, H, W]) -> score[N]``; plain tensor algebra, so it exports to
    ONNX as is (``pixels`` is only read by the composite's ``input`` check)."""

    mean: Tensor
    whitener: Tensor
    bank: Tensor
    category_means: Tensor
    category_whitener: Tensor
    input_mean: Tensor
    input_whitener: Tensor
    centre: Tensor
    spread: Tensor

    def __init__(self, method: str, stats: Mapping[str, Tensor], *, k: int = DEFAULT_K) -> None:
        super().__init__()
        if method not in OOD_METHODS:
            raise ValueError(f"unknown OOD method {method!r}; known: {', '.join(OOD_METHODS)}")
        self.method = method
        self.k = k
        composite = ("mean", "whitener", "input_mean", "input_whitener", "centre", "spread")
        needed = {"mahalanobis": ("mean", "whitener"), "knn": ("bank",), "energy": (),
                  "composite": composite + (("category_means", "category_whitener")
                                            if "category_means" in stats else ())}[method]
        missing = [name for name in needed if name not in stats]
        if missing:
            raise ValueError(f"{method} detector lacks statistics {missing}")
        for name in needed:
            self.register_buffer(name, stats[name].float().contiguous())
        if method == "knn" and not 1 <= k <= len(stats["bank"]):
            raise ValueError(f"k={k} needs 1..{len(stats['bank'])} training features")

    @property
    def checks(self) -> tuple[str, ...]:
        """The composite's checks, in the order :meth:`raw_checks` returns them."""
        has_category = hasattr(self, "category_means")
        return tuple(name for name in CHECKS if name != "category" or has_category)

    def stats(self) -> dict[str, Tensor]:
        return {name: buffer.detach().cpu().contiguous() for name, buffer in self.named_buffers()}

    def raw_checks(self, pooled: Tensor, input_stats: Tensor) -> Tensor:
        """The composite's unstandardised checks ``(N, len(checks))``."""
        features = (((pooled - self.mean) @ self.whitener) ** 2).sum(dim=-1)
        scores = [features]
        if "category" in self.checks:
            distances = squared_distances(pooled, self.category_means, self.category_whitener)
            scores.append(distances[:, 0] - distances[:, 1:].min(dim=-1).values)
        scores.append(squared_distances(input_stats, self.input_mean.unsqueeze(0), self.input_whitener)[:, 0])
        return torch.stack(scores, dim=-1)

    def forward(self, pooled: Tensor, logits: Mapping[str, Tensor], pixels: Tensor | None = None) -> Tensor:
        if self.method not in ("composite", "mahalanobis"):
            return self.score(pooled, logits, None)
        # In fp32 even under autocast (the torch backend's bf16/fp16): in bf16 the whitening products and the
        # category check's difference of distances are off by several thresholds once standardised. The
        # pixels are fp32 and ``pooled - mean`` promotes, so no cast (one would be a dtype assert in model.pt2).
        with torch.autocast(pooled.device.type, enabled=False):
            stats = input_statistics(pixels) if pixels is not None and self.method == "composite" else None
            return self.score(pooled, logits, stats)

    def score(self, pooled: Tensor, logits: Mapping[str, Tensor], input_stats: Tensor | None = None) -> Tensor:
        """:meth:`forward` from the pixels' :func:`input_statistics` instead of the pixels."""
        if self.method == "composite":
            if input_stats is None:
                raise ValueError("the composite detector reads the pixels' statistics: pass them")
            standardised = (self.raw_checks(pooled, input_stats) - self.centre) / self.spread
            return standardised.max(dim=-1).values
        if self.method == "mahalanobis":
            z = (pooled - self.mean) @ self.whitener
            return (z * z).sum(dim=-1)
        if self.method == "knn":
            similarity = F.normalize(pooled, dim=-1) @ self.bank.t()
            return 1.0 - torch.topk(similarity, self.k, dim=-1).values[:, -1]
        return -torch.stack([torch.logsumexp(value, dim=-1) for value in logits.values()]).mean(dim=0)


@dataclass
class OodFeatures:
    """What the detectors are fitted on, per image: pooled features ``(N, C)``, every head's logits and the
    pixels' :func:`input_statistics` ``(N, 9)``."""

    pooled: Tensor
    logits: dict[str, Tensor] = field(default_factory=dict)
    input_stats: Tensor | None = None


def fit_detector(method: str, train_pooled: Tensor, *, k: int = DEFAULT_K) -> OodDetector:
    """A single-statistic detector fitted on the training images' pooled features ``(N, C)``."""
    features = train_pooled.double()
    if method == "mahalanobis":
        means, whitener = gaussian_fit([features])
        return OodDetector(method, {"mean": means[0], "whitener": whitener})
    if method == "knn":
        return OodDetector(method, {"bank": F.normalize(features, dim=-1)}, k=min(k, len(features)))
    if method == "composite":
        raise ValueError("the composite detector is fitted by fit_composite (it needs the held-out split)")
    return OodDetector(method, {})


def fit_composite(train: OodFeatures, val: OodFeatures, contrast: Sequence[Tensor] = ()) -> OodDetector:
    """The composite detector: its checks fitted on the training images (``contrast``: other categories'
    training features, one tensor per category, seen through this model), each check standardised by the
    held-out images' scores."""
    if train.input_stats is None or val.input_stats is None:
        raise ValueError("the composite detector needs the images' input statistics")
    means, whitener = gaussian_fit([train.pooled])
    input_means, input_whitener = gaussian_fit([train.input_stats])
    stats = {"mean": means[0], "whitener": whitener, "input_mean": input_means[0], "input_whitener": input_whitener}
    groups = [group for group in contrast if len(group)]
    if groups:
        stats["category_means"], stats["category_whitener"] = gaussian_fit([train.pooled, *groups])
    unit = {"centre": torch.zeros(len(CHECKS) - (not groups)), "spread": torch.ones(len(CHECKS) - (not groups))}
    with torch.no_grad():
        unstandardised = OodDetector("composite", {**stats, **unit})
        raw = unstandardised.raw_checks(val.pooled.float(), val.input_stats.float())
    centre = raw.median(dim=0).values
    spread = torch.quantile(raw, 0.95, dim=0) - centre
    flat = [name for name, value in zip(unstandardised.checks, spread.tolist(), strict=True) if value <= 1e-6]
    if flat:  # dividing by a floor would make any upload a million spreads away: nearly all flagged
        n, s = len(raw), "s" if len(flat) > 1 else ""
        raise ValueError(f"the composite detector's {', '.join(flat)} check{s} cannot be standardised: the scores of "
                         f"the {n} held-out image{'s' if n != 1 else ''} do not vary (too few validation images, or "
                         "images all alike in what it measures); use more validation rows or another --ood method")
    return OodDetector("composite", {**stats, "centre": centre, "spread": spread})


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
        parameters: dict[str, Any] = {"k": self.detector.k} if self.detector.method == "knn" else {}
        if self.detector.method == "composite":
            parameters["checks"] = list(self.detector.checks)
            if "category" not in self.detector.checks:
                parameters["omitted"] = {"category": "the training data has no other categories to contrast with"}
        return {"method": self.detector.method, "parameters": parameters, "threshold": self.threshold,
                "false_alarm_rate": self.false_alarm_rate, "calibration_images": self.calibration_images,
                "output": OOD_OUTPUT, **self.extra}


def fit_ood(method: str, train: OodFeatures, val: OodFeatures, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
            *, k: int = DEFAULT_K, contrast: Sequence[Tensor] = ()) -> FittedOod:
    """Fit on the training features (and ``contrast``, for the composite), set the threshold on the held-out
    validation features."""
    if method == "composite":
        detector = fit_composite(train, val, contrast).eval()
    else:
        detector = fit_detector(method, train.pooled, k=k).eval()
    with torch.no_grad():
        scores = detector.score(val.pooled.float(), val.logits, val.input_stats).numpy()
    return FittedOod(detector, threshold_at(scores, false_alarm_rate), false_alarm_rate, len(scores),
                     {"train_images": len(train.pooled)})


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
        return {**logits, OOD_OUTPUT: self.detector(self.model.pooled(features), logits, pixels)}


@torch.no_grad()
def ood_features(model: CategoryModel, loader: DataLoader[Any], device: torch.device) -> OodFeatures:
    """Pooled features, every head's logits and the input statistics of a loader's images, in fp32 and eval
    mode (the same computation the exported graph does)."""
    model.eval()
    pooled: list[Tensor] = []
    stats: list[Tensor] = []
    logits: dict[str, list[Tensor]] = {}
    for pixels, *_ in loader:
        features = model.features(pixels.to(device))
        pooled.append(model.pooled(features).float().cpu())
        stats.append(input_statistics(pixels.float()))
        for name, value in model.forward_heads(features).items():
            logits.setdefault(name, []).append(value.float().cpu())
    return OodFeatures(torch.cat(pooled), {name: torch.cat(parts) for name, parts in logits.items()},
                       torch.cat(stats))


def contrast_sets(rows: Sequence[LabelRow], category: str, spec: PreprocessSpec, per_category: int,
                  seed: int) -> list[ImageDataset]:
    """Other categories' rows with an image, at most ``per_category`` of each (a seeded sample), as datasets
    to see through this category's model: what the composite's ``category`` check contrasts with."""
    by_category: dict[str, list[LabelRow]] = {}
    for row in rows:
        if row.category != category and row.image_path:
            by_category.setdefault(row.category, []).append(row)
    generator = np.random.default_rng(seed)
    sets = []
    for name in sorted(by_category):
        group = by_category[name]
        picked = sorted(generator.permutation(len(group))[:per_category])
        sets.append(ImageDataset([group[i] for i in picked], np.zeros((len(picked), 0), dtype=np.int64), spec))
    return sets


def fit_category_ood(cfg: TrainConfig, model: CategoryModel, train_set: ImageDataset, val_loader: DataLoader[Any],
                     device: torch.device, log: Callable[[str], None],
                     other_rows: Sequence[LabelRow] = ()) -> FittedOod | None:
    """The end of training: fit ``cfg.ood`` on the training images (and, for the composite, ``other_rows``: the
    catalog's other categories), its threshold on the validation split."""
    if cfg.ood == "none":
        return None
    def features(dataset: Dataset[Any]) -> OodFeatures:
        return ood_features(model, DataLoader(dataset, batch_size=cfg.batch_size * 2, num_workers=cfg.num_workers),
                            device)

    train = features(train_set)
    contrast = []
    if cfg.ood == "composite":
        category = train_set.rows[0].category if train_set.rows else ""
        contrast = [features(group).pooled for group in contrast_sets(other_rows, category, train_set.spec,
                                                                       cfg.ood_contrast_per_category, cfg.seed)]
    val = ood_features(model, val_loader, device)
    try:
        fitted = fit_ood(cfg.ood, train, val, cfg.ood_false_alarm_rate, k=cfg.ood_k, contrast=contrast)
    except ValueError as error:  # too few or too alike held-out images: a training run still ends well
        log(f"NO OOD DETECTOR: {error}. The checkpoint has none; the service answers out_of_distribution: null")
        return None
    if contrast:
        fitted.extra["contrast_images"] = sum(len(group) for group in contrast)
    log(f"OOD detector {cfg.ood} ({', '.join(fitted.detector.checks) if cfg.ood == 'composite' else 'one check'}): "
        f"fitted on {len(train.pooled)} training images, threshold {fitted.threshold:.4g} flags "
        f"{cfg.ood_false_alarm_rate:.0%} of {fitted.calibration_images} validation images")
    return fitted
