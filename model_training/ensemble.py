"""Several checkpoints of one category predicting as one model, and flip test-time augmentation.

The ensemble takes the input of its largest member (the most pixels; its preprocessing is what predict and
the service apply), and each member adapts it inside the graph to its own preprocessing: resized to its
size with its interpolation, renormalised to its mean/std. Both steps are affine per channel and weights of
the resize sum to one, so they commute; the renormalisation runs after the resize, on the smaller tensor.

Averaging (decided by measurement, see BENCHMARKS.md "Recipe"): each member's *calibrated*
log-probabilities, ``log_softmax((logits + offsets) / temperature)`` with its own calibration, are
averaged; the ensemble then decodes with no further calibration (softmax of the mean log-probability is the
normalised geometric mean of the members' calibrated probabilities) and the union of the members' rules
(each was kept because it raised some member's validation score; all are label implications of the same
taxonomy). Members of different families have logits on different scales, which their calibration
(temperature) puts on one footing; raw logits would let the most confident member dominate.

Flip TTA (``tta_flip``) averages a model's raw logits over the image and its mirror image before anything
else (the same model, so the same scale), in the graph too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catalog.decoding import AttributeCalibration, ConsistencyRule
from catalog.manifest import sha256_file
from catalog.preprocessing import PreprocessSpec
from model_training.checkpoint import (
    WEIGHTS_NAME,
    CheckpointError,
    CheckpointInfo,
    find_checkpoint_dirs,
    load_checkpoint,
    read_info,
)
from model_training.ood import Scored, load_ood

ENSEMBLE_OOD_NOTE = ("an ensemble has no out-of-distribution score: its members' scores are on different scales "
                     "and no threshold was set on held-out images for their combination; export a single checkpoint "
                     "to serve one")
Combine = Literal["log_probs", "logits"]
DEFAULT_COMBINE: Combine = "log_probs"
TORCH_MODES = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic"}
"""Preprocessing interpolations the graph can reproduce (PIL's lanczos has no ONNX Resize mode)."""


@dataclass(frozen=True)
class MemberRecord:
    """What a manifest lists about one member (``catalog.manifest.MemberSpec``)."""

    name: str
    backbone: str
    family: str
    image_size: tuple[int, int]
    checkpoint: str
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "backbone": self.backbone, "family": self.family,
                "image_size": list(self.image_size), "checkpoint": self.checkpoint, "sha256": self.sha256}


@dataclass(frozen=True)
class LoadedPredictor:
    """A model to run (``forward(pixels) -> {attribute: (N, K)}``) and the info that decodes its outputs:
    preprocessing, value orders, calibration, rules. ``members`` is empty for a single checkpoint."""

    model: nn.Module
    info: CheckpointInfo
    members: tuple[MemberRecord, ...] = ()
    tta: str | None = None
    ood_note: str | None = None
    """Why the model has no OOD score although its checkpoints have detectors (an ensemble), else None.
    With ``info.ood`` set, ``model`` also returns ``catalog.manifest.OOD_OUTPUT``."""


class Member(nn.Module):
    """One model fed the ensemble's input: resized and renormalised to its own preprocessing, optionally
    flip-averaged, optionally turned into calibrated log-probabilities."""

    scale: Tensor
    shift: Tensor

    def __init__(self, model: nn.Module, spec: PreprocessSpec, input_spec: PreprocessSpec, *, tta_flip: bool = False,
                 calibration: Mapping[str, AttributeCalibration] | None = None) -> None:
        super().__init__()
        self.model = model
        self.size = None if (spec.height, spec.width) == (input_spec.height, input_spec.width) \
            else (spec.height, spec.width)
        if self.size is not None and spec.interpolation not in TORCH_MODES:
            raise CheckpointError(f"a member with {spec.interpolation!r} interpolation cannot be resized inside the "
                                  f"graph (supported: {', '.join(TORCH_MODES)}); train it with one of those")
        self.mode = TORCH_MODES.get(spec.interpolation, "bilinear")
        self.renormalise = (spec.mean, spec.std) != (input_spec.mean, input_spec.std)
        scale = torch.tensor(input_spec.std) / torch.tensor(spec.std)
        shift = (torch.tensor(input_spec.mean) - torch.tensor(spec.mean)) / torch.tensor(spec.std)
        self.register_buffer("scale", scale.reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.reshape(1, 3, 1, 1), persistent=False)
        self.tta_flip = tta_flip
        self.calibration = dict(calibration) if calibration is not None else None

    def adapt(self, pixels: Tensor) -> Tensor:
        if self.size is not None:
            pixels = F.interpolate(pixels, size=self.size, mode=self.mode,
                                   align_corners=None if self.mode == "nearest" else False)
        if self.renormalise:
            pixels = pixels * self.scale + self.shift
        return pixels

    def forward(self, pixels: Tensor) -> dict[str, Tensor]:
        pixels = self.adapt(pixels)
        if self.tta_flip:
            n = pixels.shape[0]
            both = self.model(torch.cat([pixels, torch.flip(pixels, dims=[3])]))
            logits = {name: (value[:n] + value[n:]) / 2 for name, value in both.items()}
        else:
            logits = self.model(pixels)
        if self.calibration is None:
            return dict(logits)
        return {name: F.log_softmax(calibrated(value, self.calibration.get(name)), dim=-1)
                for name, value in logits.items()}


def calibrated(logits: Tensor, calibration: AttributeCalibration | None) -> Tensor:
    """``(logits + offsets) / temperature``, as :meth:`catalog.decoding.AttributeCalibration.apply`."""
    if calibration is None:
        return logits
    if calibration.offsets:
        logits = logits + torch.tensor(calibration.offsets, dtype=logits.dtype)
    return logits / calibration.temperature


class Ensemble(nn.Module):
    """The mean of its members' outputs, per attribute."""

    def __init__(self, members: Sequence[Member], attribute_names: Sequence[str]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.attribute_names = tuple(attribute_names)

    def forward(self, pixels: Tensor) -> dict[str, Tensor]:
        outputs = [member(pixels) for member in self.members]
        return {name: torch.stack([out[name] for out in outputs]).mean(dim=0) for name in self.attribute_names}


def group_checkpoints(paths: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Category name -> its checkpoint directories, in the order given; each path is a checkpoint directory
    or a parent of one per category. Several for one category make an ensemble; one given twice is an error."""
    found: dict[str, list[Path]] = {}
    seen: set[Path] = set()
    for path in paths:
        for candidate in find_checkpoint_dirs(path):
            if candidate.resolve() in seen:
                raise CheckpointError(f"checkpoint {candidate} is given twice")
            seen.add(candidate.resolve())
            found.setdefault(read_info(candidate).category, []).append(candidate)
    return found


def largest(specs: Sequence[PreprocessSpec]) -> int:
    """Index of the spec with the most pixels (the first of equals)."""
    return max(range(len(specs)), key=lambda i: (specs[i].height * specs[i].width, -i))


def member_record(path: Path, info: CheckpointInfo) -> MemberRecord:
    spec = info.preprocessing
    return MemberRecord(name=f"{path.parent.name}/{path.name}", backbone=str(info.backbone.get("name")),
                        family=str(info.backbone.get("family", "hf-convnext")), image_size=(spec.height, spec.width),
                        checkpoint=str(path), sha256=sha256_file(path / WEIGHTS_NAME))


def union_rules(infos: Sequence[CheckpointInfo]) -> list[ConsistencyRule]:
    """Every member's rules, once each (the first member's copy of a repeated one)."""
    rules: dict[tuple[str, str, str, str], ConsistencyRule] = {}
    for info in infos:
        for rule in info.rules:
            rules.setdefault((rule.if_attribute, rule.if_value, rule.then_attribute, rule.then_value), rule)
    return list(rules.values())


def load_predictor(paths: Sequence[str | Path], *, tta_flip: bool = False, combine: Combine = DEFAULT_COMBINE,
                   map_location: str = "cpu") -> LoadedPredictor:
    """One checkpoint (as it is, or flip-averaged) or an ensemble of several of one category."""
    loaded = [load_checkpoint(path, map_location=map_location) for path in paths]
    if not loaded:
        raise CheckpointError("no checkpoint to load")
    tta = "flip" if tta_flip else None
    if len(loaded) == 1:
        single, info = loaded[0]
        try:
            detector = load_ood(paths[0], info.ood)
        except (FileNotFoundError, ValueError) as error:
            raise CheckpointError(f"{paths[0]}: {error}") from None
        model: nn.Module = single
        if detector is not None:
            model = Scored(single, detector, tta_flip=tta_flip).eval()
        elif tta_flip:
            model = Member(single, info.preprocessing, info.preprocessing, tta_flip=True).eval()
        return LoadedPredictor(model, info, (), tta)
    infos = [info for _, info in loaded]
    check_members(paths, infos)
    main_spec = infos[largest([i.preprocessing for i in infos])].preprocessing
    members = [Member(model, info.preprocessing, main_spec, tta_flip=tta_flip,
                      calibration=info.calibration if combine == "log_probs" else None) for model, info in loaded]
    ensemble = Ensemble(members, infos[0].attribute_names).to(map_location).eval()
    records = tuple(member_record(Path(p), i) for p, i in zip(paths, infos, strict=True))
    info = replace(infos[0], preprocessing=main_spec, calibration={}, rules=union_rules(infos),
                   backbone={"name": "ensemble of " + ", ".join(r.backbone for r in records), "family": "ensemble"},
                   metrics={"members": {r.name: i.metrics.get("val_score") for r, i in zip(records, infos,
                                                                                            strict=True)},
                            "combine": combine},
                   train_config={}, ood=None)
    note = ENSEMBLE_OOD_NOTE if any(i.ood for i in infos) else None
    return LoadedPredictor(ensemble, info, records, tta, note)


def check_members(paths: Sequence[str | Path], infos: Sequence[CheckpointInfo]) -> None:
    """Members must predict the same category, heads and value orders, with one resize mode."""
    first = infos[0]
    for path, info in zip(paths[1:], infos[1:], strict=True):
        if info.category != first.category:
            raise CheckpointError(f"{path}: category {info.category!r}, but {paths[0]} is {first.category!r}")
        if info.value_orders != first.value_orders:
            raise CheckpointError(f"{path}: heads or value orders differ from {paths[0]}'s")
        if info.preprocessing.resize != first.preprocessing.resize:
            raise CheckpointError(f"{path}: resize mode {info.preprocessing.resize!r} differs from {paths[0]}'s "
                                  f"{first.preprocessing.resize!r}; the graph can only resize a common input")
