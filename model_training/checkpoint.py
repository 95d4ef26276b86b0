"""Checkpoint directories: ``model.safetensors`` plus ``checkpoint.json``.

The JSON holds everything needed to rebuild and serve the model without the training code's
defaults: the taxonomy slice, each head's value order, the preprocessing spec, the backbone config,
head sizes, the calibration, the consistency rules, validation metrics and the git commit.

Loading is strict: a missing, unexpected or wrongly shaped weight is an error listing the keys (the
published run silently lost 1 to 2 points by loading with ``strict=False``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from catalog.decoding import AttributeCalibration, ConsistencyRule, Decoder
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import Category, Taxonomy, load_taxonomy
from model_training.backbone import BackboneError, backbone_from_entry
from model_training.model import CategoryModel

FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1
"""Version 1: the backbone was a bare ``ConvNextModel`` (weights ``backbone.*``, entry without a family);
version 2 wraps every family (weights ``backbone.model.*``, entry with family and pretrained_cfg)."""
WEIGHTS_NAME = "model.safetensors"
INFO_NAME = "checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded, with the reason (and the offending keys)."""


@dataclass
class CheckpointInfo:
    category: str
    """Display name, e.g. ``"Women Tshirts"``."""
    value_orders: dict[str, tuple[str, ...]]
    """Attribute name -> the head's value order; dict order is the model's output order."""
    preprocessing: PreprocessSpec
    backbone: dict[str, Any]
    """``{"name": what --backbone said, "family": ..., "config": ..., "pretrained_cfg": ...}``
    (:meth:`model_training.backbones.base.Backbone.checkpoint_entry`)."""
    head: dict[str, Any] = field(default_factory=lambda: {"hidden": 256, "dropout": 0.2})
    calibration: dict[str, AttributeCalibration] = field(default_factory=dict)
    rules: list[ConsistencyRule] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    taxonomy: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    format_version: int = FORMAT_VERSION
    ood: dict[str, Any] | None = None
    """The out-of-distribution detector (``model_training.ood.FittedOod.describe``; its statistics are in
    ``ood.safetensors``), or None for a checkpoint without one (trained before detectors existed)."""

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(self.value_orders)

    @property
    def slug(self) -> str:
        return load_taxonomy().category(self.category).slug

    def taxonomy_category(self) -> Category:
        """The category as the checkpoint saw it (its taxonomy slice), values in head order."""
        base = Taxonomy.from_dict({self.category: self.taxonomy}).category(self.category) if self.taxonomy \
            else load_taxonomy().category(self.category)
        return base.with_value_orders(self.value_orders)

    def decoder(self, *, with_calibration: bool = True, with_rules: bool = True) -> Decoder:
        return Decoder(
            self.taxonomy_category(),
            dict(self.calibration) if with_calibration else {},
            tuple(self.rules) if with_rules else (),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "category": self.category,
            "slug": self.slug,
            "taxonomy": self.taxonomy,
            "value_orders": {k: list(v) for k, v in self.value_orders.items()},
            "preprocessing": self.preprocessing.to_dict(),
            "backbone": self.backbone,
            "head": self.head,
            "calibration": {k: v.to_dict() for k, v in self.calibration.items()},
            "rules": [r.to_dict() for r in self.rules],
            "metrics": self.metrics,
            "git_commit": self.git_commit,
            "train_config": self.train_config,
            "created_at": self.created_at,
            **({"ood": self.ood} if self.ood is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointInfo:
        version = data.get("format_version")
        if version not in (LEGACY_FORMAT_VERSION, FORMAT_VERSION):
            raise CheckpointError(f"checkpoint format_version {version!r} is not supported (expected "
                                  f"{LEGACY_FORMAT_VERSION} or {FORMAT_VERSION})")
        return cls(
            category=str(data["category"]),
            value_orders={k: tuple(v) for k, v in data["value_orders"].items()},
            preprocessing=PreprocessSpec.from_dict(data["preprocessing"]),
            backbone=dict(data["backbone"]),
            head=dict(data.get("head") or {}),
            calibration={k: AttributeCalibration.from_dict(v) for k, v in (data.get("calibration") or {}).items()},
            rules=[ConsistencyRule.from_dict(r) for r in data.get("rules") or []],
            metrics=dict(data.get("metrics") or {}),
            git_commit=data.get("git_commit"),
            taxonomy=dict(data.get("taxonomy") or {}),
            train_config=dict(data.get("train_config") or {}),
            created_at=str(data.get("created_at") or ""),
            format_version=int(version),
            ood=dict(data["ood"]) if data.get("ood") else None,
        )


def git_commit() -> str | None:
    """HEAD of the repository this code lives in, ``-dirty`` if the tree has changes; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def make_info(model: CategoryModel, category: Category, preprocessing: PreprocessSpec, backbone_name: str,
              **extra: Any) -> CheckpointInfo:
    """Describe a model: everything but calibration, rules and metrics comes from the model itself."""
    taxonomy_slice = Taxonomy([category]).to_dict()[category.name]
    return CheckpointInfo(
        category=category.name,
        value_orders=dict(model.value_orders),
        preprocessing=preprocessing,
        backbone=model.backbone.checkpoint_entry(backbone_name),
        head={"hidden": model.head_hidden, "dropout": model.head_dropout},
        taxonomy=taxonomy_slice,  # type: ignore[arg-type]
        **extra,
    )


def build_model(info: CheckpointInfo) -> CategoryModel:
    """The architecture a checkpoint describes, with random weights."""
    try:
        backbone = backbone_from_entry(info.backbone)
    except BackboneError as error:
        raise CheckpointError(f"cannot rebuild the checkpoint's backbone: {error}") from None
    return CategoryModel(backbone, info.value_orders, head_hidden=int(info.head.get("hidden", 256)),
                         head_dropout=float(info.head.get("dropout", 0.2)))


def save_checkpoint(run_dir: str | Path, model: CategoryModel, info: CheckpointInfo) -> Path:
    """Write weights and JSON atomically-ish (temp files renamed), so a crash never leaves half a checkpoint."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if tuple(info.value_orders) != model.attribute_names:
        raise CheckpointError(f"info attributes {list(info.value_orders)} != model heads {list(model.attribute_names)}")
    info.created_at = info.created_at or datetime.now(UTC).isoformat(timespec="seconds")
    if info.git_commit is None:
        info.git_commit = git_commit()
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights_tmp = folder / (WEIGHTS_NAME + ".tmp")
    info_tmp = folder / (INFO_NAME + ".tmp")
    save_file(state, str(weights_tmp), metadata={"format": "pt", "category": info.category})
    info_tmp.write_text(json.dumps(info.to_dict(), indent=2) + "\n", encoding="utf-8")
    weights_tmp.replace(folder / WEIGHTS_NAME)
    info_tmp.replace(folder / INFO_NAME)
    return folder


def read_info(run_dir: str | Path) -> CheckpointInfo:
    path = Path(run_dir) / INFO_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (is {run_dir} a checkpoint directory?)")
    try:
        return CheckpointInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid checkpoint description: {error}") from None


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every key or fail naming the missing, unexpected and mis-shaped ones."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {missing}")
        if unexpected:
            parts.append(f"unexpected keys: {unexpected}")
        if mis_shaped:
            parts.append(f"shape mismatches: {mis_shaped}")
        raise CheckpointError(f"{source}: weights do not match the model; " + "; ".join(parts))
    model.load_state_dict(dict(state), strict=True)


def legacy_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A version-1 state dict in today's layout: the bare ConvNeXt's ``backbone.*`` is now ``backbone.model.*``."""
    return {("backbone.model." + k.removeprefix("backbone.") if k.startswith("backbone.") else k): v
            for k, v in state.items()}


def load_checkpoint(run_dir: str | Path, map_location: str = "cpu") -> tuple[CategoryModel, CheckpointInfo]:
    """``(model in eval mode, info)`` from a checkpoint directory; strict about every weight."""
    info = read_info(run_dir)
    weights = Path(run_dir) / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file not found")
    model = build_model(info)
    state = load_file(str(weights), device=map_location)
    if info.format_version == LEGACY_FORMAT_VERSION:
        state = legacy_state(state)
    load_state_strict(model, state, str(weights))
    model.to(map_location)
    model.eval()
    return model, info


def is_checkpoint_dir(path: str | Path) -> bool:
    return (Path(path) / INFO_NAME).is_file() and (Path(path) / WEIGHTS_NAME).is_file()


def find_checkpoint_dirs(path: str | Path) -> list[Path]:
    """``path`` itself if it is a checkpoint directory, else every checkpoint directly below it (what
    ``train --category all`` writes), sorted; a folder holding none is an error, not an empty list."""
    folder = Path(path)
    if is_checkpoint_dir(folder):
        return [folder]
    found = sorted(p for p in folder.iterdir() if is_checkpoint_dir(p)) if folder.is_dir() else []
    if not found:
        raise CheckpointError(f"{folder}: neither a checkpoint directory nor a folder of checkpoint directories")
    return found
