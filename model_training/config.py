"""Every training knob in one typed dataclass; the CLI is generated from it, so defaults live here only.

Defaults reproduce the published recipe (ConvNeXt-Base 384 22k->1k, 512 x 512, two phases) plus this
project's fixes (masked loss, per-location attention, metric-tuned decoding).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args, get_type_hints

from catalog.preprocessing import DEFAULT_IMAGE_SIZE, DEFAULT_INTERPOLATION, DEFAULT_RESIZE, Interpolation, ResizeMode
from model_training.backbone import DEFAULT_BACKBONE

LossKind = Literal["ce", "balanced", "logit_adjusted"]


@dataclass
class TrainConfig:
    data: str = ""
    """Challenge layout: train.csv + train_images/ (test.csv + test_images/ only for the MMD target)."""
    category: str = "all"
    """A category name or slug, or ``all`` (one sub-directory of ``out`` per category slug)."""
    out: str = "runs/latest"
    backbone: str = DEFAULT_BACKBONE
    """Hugging Face hub id or ``save_pretrained`` dir (ConvNeXt, ConvNeXt-V2, CLIP, SigLIP, ViT, DINOv2),
    ``open_clip:MODEL/TAG`` / ``open_clip:DIR`` / ``open_clip:hf-hub:ORG/REPO`` (the ``openclip`` extra), or a
    random-init preset: convnext-base/-tiny/-atto/-test, vit-test (model_training/backbone.py)."""
    image_size: int = DEFAULT_IMAGE_SIZE
    interpolation: Interpolation = DEFAULT_INTERPOLATION
    resize: ResizeMode = DEFAULT_RESIZE
    epochs_t1: int = 10
    epochs_t2: int = 5
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-4
    """Backbone learning rate in T1 (heads use ``head_lr``)."""
    head_lr: float = 1e-3
    t2_lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    head_hidden: int = 256
    head_dropout: float = 0.2
    drop_path: float = 0.0
    loss: LossKind = "ce"
    """``balanced``: class-balanced weights (Cui et al.); ``logit_adjusted``: + tau*log(prior) (Menon et al.)."""
    loss_tau: float = 1.0
    label_smoothing: float = 0.0
    drop_incomplete: bool = False
    """The published phase-1 behaviour (drop every row with a missing label); only for ablations."""
    mmd_weight: float = 0.0
    """> 0 adds an MMD term pulling training features toward the test split's (unlabelled) features."""
    augment_p: float = 0.5
    max_rotation: float = 10.0
    val_fraction: float = 0.15
    max_rows: int = 0
    """Use at most this many training rows per category (0: all); for quick runs."""
    calibrate: bool = True
    rules: bool = True
    rule_min_support: int = 20
    rule_min_confidence: float = 0.95
    seed: int = 42
    num_workers: int = 2
    cache_images: bool = False
    """Keep resized images in memory (H*W*3 bytes per row): much faster on CPU, for small datasets."""
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler); ignored on CPU."""
    resume: bool = False
    progress: bool = True
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(prog: str = "python -m model_training.train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train per-category attribute models.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        hint = hints[f.name]
        kwargs: dict[str, Any] = {"default": f.default, "dest": f.name}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif getattr(hint, "__origin__", None) is Literal:
            kwargs["choices"] = list(get_args(hint))
        else:
            kwargs["type"] = hint
        if f.name in ("data",):
            kwargs["required"] = True
        parser.add_argument(_flag(f.name), **kwargs)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    return TrainConfig(**vars(build_parser().parse_args(argv)))
