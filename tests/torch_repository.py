"""A tiny trained-looking checkpoint (ConvNeXt "test" preset, with an OOD detector) exported with
``--torch-export``: a repository both backends serve, for the torch backend's tests."""

from __future__ import annotations

from pathlib import Path

import torch

from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy
from export.exporter import export_checkpoint
from model_training.backbone import build_backbone
from model_training.checkpoint import make_info, save_checkpoint
from model_training.model import CategoryModel, value_orders_for
from model_training.ood import OodFeatures, fit_ood, input_statistics, save_ood

SLUG = "men_tshirts"
SPEC = PreprocessSpec(height=32, width=32)


def tiny_checkpoint(folder: Path, *, seed: int = 0, ood: bool = True, method: str = "mahalanobis") -> Path:
    """A random-init checkpoint of men_tshirts whose detector is fitted on random images."""
    torch.manual_seed(seed)
    category = load_taxonomy()[SLUG]
    model = CategoryModel(build_backbone("convnext-test"), value_orders_for(category), head_hidden=16).eval()
    description = None
    if ood:
        with torch.no_grad():
            train_pixels = torch.randn(64, 3, *SPEC.input_shape[1:])
            val_pixels = torch.randn(20, 3, *SPEC.input_shape[1:])
            pooled = model.pooled(model.features(train_pixels))
            val = model.features(val_pixels)
            held_out = OodFeatures(model.pooled(val), model.forward_heads(val), input_statistics(val_pixels))
            fitted = fit_ood(method, OodFeatures(pooled, {}, input_statistics(train_pixels)), held_out, 0.1)
        description = save_ood(folder, fitted)
    info = make_info(model, category, SPEC, "convnext-test", ood=description)
    return save_checkpoint(folder, model, info)


def torch_repository(root: Path, *, ood: bool = True, method: str = "mahalanobis") -> tuple[Path, Path]:
    """``(repository, checkpoint)``: the checkpoint exported as version 1 with ``model.pt2``."""
    checkpoint = tiny_checkpoint(root / "run" / SLUG, ood=ood, method=method)
    export_checkpoint(checkpoint, root / "repository", version_number=1, torch_export=True)
    return root / "repository", checkpoint
