"""A model repository with a random-init ConvNeXt of a given size, made through the real export path, for
benchmarks that need a realistic model's *cost* (not its predictions) without trained weights.

    python benchmarks/random_repository.py OUT [--backbone convnext-tiny] [--image-size 224] [--precision int8]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch

from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy
from export.exporter import export_checkpoint
from model_training.backbone import build_backbone
from model_training.checkpoint import make_info, save_checkpoint
from model_training.model import CategoryModel, value_orders_for


def build_random_repository(repository: Path, *, slug: str = "men_tshirts", backbone: str = "convnext-tiny",
                            image_size: int = 224, precision: str = "int8", seed: int = 0,
                            torch_export: bool = False) -> Path:
    """Export one random-init category model as ``repository/slug/1`` (with ``model.pt2`` for the torch
    backend when ``torch_export``); returns the version folder."""
    torch.manual_seed(seed)
    category = load_taxonomy()[slug]
    model = CategoryModel(build_backbone(backbone), value_orders_for(category)).eval()
    info = make_info(model, category, PreprocessSpec(height=image_size, width=image_size), backbone)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(Path(tmp) / slug, model, info)
        result = export_checkpoint(checkpoint, repository, version_number=1, precision=precision,
                                   torch_export=torch_export)
    return result.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--category", default="men_tshirts")
    parser.add_argument("--backbone", default="convnext-tiny")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--precision", default="int8")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    folder = build_random_repository(args.repository, slug=args.category, backbone=args.backbone,
                                     image_size=args.image_size, precision=args.precision)
    print(folder)


if __name__ == "__main__":
    main()
