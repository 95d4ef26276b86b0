"""Every training knob in one typed dataclass; the CLI is generated from it, so defaults and help live here
only: each field's docstring is its ``--help`` line, and the default is appended to it.

Defaults reproduce the published recipe (ConvNeXt-Base 384 22k->1k, 512 x 512, two phases) plus this
project's fixes (masked loss, per-location attention, metric-tuned decoding). This module imports no torch:
``--help`` answers before the training code loads.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from catalog.preprocessing import DEFAULT_IMAGE_SIZE, DEFAULT_INTERPOLATION, DEFAULT_RESIZE, Interpolation, ResizeMode

LossKind = Literal["ce", "balanced", "logit_adjusted"]
OodKind = Literal["composite", "mahalanobis", "knn", "energy", "none"]
DEFAULT_BACKBONE = "facebook/convnext-base-384-22k-1k"


@dataclass
class TrainConfig:
    data: str = ""
    """Challenge layout: train.csv + train_images/ (test.csv + test_images/ only for the MMD target)."""
    category: str = "all"
    """A category name or slug, or ``all`` (one sub-directory of ``out`` per category slug)."""
    out: str = "runs/latest"
    """Run directory: the checkpoint (or one per category with ``all``), metrics, curves, train_summary.json."""
    backbone: str = DEFAULT_BACKBONE
    """Hugging Face hub id or ``save_pretrained`` dir (ConvNeXt, ConvNeXt-V2, CLIP, SigLIP, ViT, DINOv2),
    ``open_clip:MODEL/TAG`` / ``open_clip:DIR`` / ``open_clip:hf-hub:ORG/REPO`` (the ``openclip`` extra), or a
    random-init preset: convnext-base/-tiny/-atto/-test, vit-test (model_training/backbone.py)."""
    image_size: int = DEFAULT_IMAGE_SIZE
    """Training and serving input size (square), in pixels."""
    interpolation: Interpolation = DEFAULT_INTERPOLATION
    """Resampling used to resize images (stored in the checkpoint, used by predict and the service)."""
    resize: ResizeMode = DEFAULT_RESIZE
    """``stretch`` to the square (as published) or ``letterbox`` on white."""
    epochs_t1: int = 10
    """End-to-end (backbone + heads) epochs."""
    epochs_t2: int = 5
    """Head fine-tuning epochs on cached features of the frozen backbone (0: skip T2)."""
    batch_size: int = 16
    """Images per step and process (T2 and validation use twice this)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimiser step."""
    lr: float | None = None
    """Backbone learning rate in T1 (heads use ``head_lr``); unset: the family's default, 1e-4, or 1e-5 for
    CLIP, SigLIP and open_clip towers (large contrastive towers lose what they learned at 1e-4)."""
    head_lr: float = 1e-3
    """Head learning rate in T1."""
    t2_lr: float = 5e-4
    """Head learning rate in T2."""
    llrd: float = 1.0
    """Layer-wise learning-rate decay: the i-th of the backbone's n ordered blocks (stem first) trains at
    lr * llrd**(n-1-i); 1.0 is off; 0.65-0.85 is usual for large pretrained towers."""
    ema_decay: float = 0.0
    """> 0 keeps an exponential moving average of the weights (e.g. 0.999), validated, selected and saved
    instead of the raw weights; 0 is off."""
    weight_decay: float = 0.05
    """AdamW weight decay (T1 and T2)."""
    warmup_fraction: float = 0.05
    """Share of T1 steps with a linear learning-rate warm-up before the cosine decay."""
    head_hidden: int = 256
    """Hidden width of each attribute head's MLP."""
    head_dropout: float = 0.2
    """Dropout before each head's MLP."""
    drop_path: float = 0.0
    """Stochastic depth rate of the backbone (an error on families without it)."""
    loss: LossKind = "ce"
    """``balanced``: class-balanced weights (Cui et al.); ``logit_adjusted``: + tau*log(prior) (Menon et al.)."""
    loss_tau: float = 1.0
    """The tau of the logit-adjusted loss."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing."""
    drop_incomplete: bool = False
    """The published phase-1 behaviour (drop every row with a missing label); only for ablations."""
    mmd_weight: float = 0.0
    """> 0 adds an MMD term pulling training features toward the test split's (unlabelled) features."""
    augment_p: float = 0.5
    """Probability of each augmentation (random resized crop, flip, rotation)."""
    max_rotation: float = 10.0
    """Largest rotation of the augmentation, in degrees."""
    val_fraction: float = 0.15
    """Share of each category's rows held out (stratified) for validation, calibration and rules."""
    max_rows: int = 0
    """Use at most this many training rows per category (0: all); for quick runs."""
    calibrate: bool = True
    """Fit per-attribute temperature and class offsets on the validation split."""
    rules: bool = True
    """Mine consistency rules from the training labels and keep those that raise the validation score."""
    rule_min_support: int = 20
    """Fewest training rows with the rule's premise for a candidate rule."""
    rule_min_confidence: float = 0.95
    """Lowest share of those rows that have the rule's consequence."""
    rule_min_lift: float = 1.2
    """Lowest confidence / marginal frequency of the consequence: drops rules that only restate a common
    value (e.g. "X implies ocassion=casual" where 98 % of rows are casual anyway)."""
    ood: OodKind = "composite"
    """Out-of-distribution detector fitted on the training images and exported in the graph
    (model_training/ood.py; chosen by measurement, BENCHMARKS.md "Unfamiliar images"); ``none``: no detector."""
    ood_false_alarm_rate: float = 0.05
    """Share of held-out (validation) in-distribution images the OOD threshold flags."""
    ood_k: int = 5
    """Neighbour rank for ``--ood knn``."""
    ood_contrast_per_category: int = 100
    """Training images of each other category in the data that ``--ood composite``'s category check contrasts
    with (a seeded sample)."""
    seed: int = 42
    """Seed of Python, NumPy, torch, the split, the data order and the augmentations."""
    num_workers: int = 2
    """Data-loader worker processes."""
    cache_images: bool = False
    """Keep resized images in memory (H*W*3 bytes per row): much faster on CPU, for small datasets."""
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler); full precision on CPU."""
    channels_last: bool = False
    """Channels-last memory format for the model and inputs (faster convolutions on recent GPUs); an error
    on ViT-style towers, which have no convolutions to speed up."""
    compile: bool = False
    """``torch.compile`` the T1 step (an error where it cannot run, e.g. no C++ compiler for CPU inductor)."""
    resume: bool = False
    """Continue after the last finished T1 epoch (train_state.pt); skip categories already complete."""
    progress: bool = True
    """tqdm progress bars (``--no-progress`` for logs)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@functools.cache
def field_docs() -> dict[str, str]:
    """Each :class:`TrainConfig` field's docstring (the string right after it), whitespace collapsed."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(TrainConfig)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(following, ast.Expr) \
                and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _argument(hint: Any) -> dict[str, Any]:
    """argparse keywords for a field's type: a switch, a choice list or a converter (``X | None`` as X)."""
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(hint) is Literal:
        return {"choices": list(get_args(hint))}
    if get_origin(hint) in (Union, types.UnionType):
        return {"type": next(a for a in get_args(hint) if a is not type(None))}
    return {"type": hint}


def build_parser(prog: str = "python -m model_training.train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train per-category attribute models.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = get_type_hints(TrainConfig)
    docs = field_docs()
    for f in fields(TrainConfig):
        # "%" would be read as a format specifier by the help formatter.
        kwargs: dict[str, Any] = {"default": f.default, "dest": f.name, "help": docs[f.name].replace("%", "%%"),
                                  **_argument(hints[f.name])}
        if f.name == "data":
            kwargs["required"] = True
        parser.add_argument(_flag(f.name), **kwargs)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    return TrainConfig(**vars(build_parser().parse_args(argv)))
