"""Fit (or refit) the out-of-distribution detector of finished checkpoints, without retraining.

    python -m model_training.fit_ood --checkpoint RUN_DIR [RUN_DIR ...] --data DIR
        [--method composite|mahalanobis|knn|energy] [--false-alarm-rate 0.05] [--k 5]

Training fits the detector at its end (``--ood``); this does the same for a checkpoint trained before
detectors existed or to try another method: the training rows and the validation split are rebuilt from the
checkpoint's own training options (seed, validation share, row limit), so the statistics come from the
images the backbone trained on and the threshold from the held-out ones, exactly as in training.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_training.data import ImageDataset


def split_datasets(info: Any, data_dir: str | Path) -> tuple[ImageDataset, ImageDataset]:
    """The checkpoint's training rows and validation rows (un-augmented), as its training split them."""
    from catalog.dataset import read_split
    from catalog.taxonomy import load_taxonomy
    from model_training.config import TrainConfig
    from model_training.data import ImageDataset, category_rows, encode_targets, stratified_split

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in info.train_config.items() if k in known})
    taxonomy = load_taxonomy()
    rows = category_rows(read_split(data_dir, "train", taxonomy), taxonomy.category(info.category), cfg)
    targets = encode_targets(rows, info.value_orders)
    train_idx, val_idx = stratified_split(targets, cfg.val_fraction, cfg.seed)
    return (ImageDataset([rows[i] for i in train_idx], targets[train_idx], info.preprocessing),
            ImageDataset([rows[i] for i in val_idx], targets[val_idx], info.preprocessing))


def add_detector(run_dir: str | Path, data_dir: str | Path, method: str, false_alarm_rate: float, k: int) -> float:
    """Fit and store the detector in the checkpoint at ``run_dir``; returns its threshold."""
    import torch
    from torch.utils.data import DataLoader

    from catalog.dataset import read_split
    from catalog.taxonomy import load_taxonomy
    from model_training.checkpoint import load_checkpoint, save_checkpoint
    from model_training.config import TrainConfig
    from model_training.ood import fit_category_ood, save_ood

    model, info = load_checkpoint(run_dir)
    train_set, val_set = split_datasets(info, data_dir)
    cfg = TrainConfig(ood=method, ood_false_alarm_rate=false_alarm_rate, ood_k=k,  # type: ignore[arg-type]
                      batch_size=32, num_workers=0)
    fitted = fit_category_ood(cfg, model, train_set, DataLoader(val_set, batch_size=64), torch.device("cpu"),
                              lambda message: print(f"{info.slug}: {message}", flush=True),
                              read_split(data_dir, "train", load_taxonomy()))
    if fitted is None:
        raise ValueError("--method none fits nothing")
    info.ood = save_ood(run_dir, fitted)
    info.train_config = {**info.train_config, "ood": method, "ood_false_alarm_rate": false_alarm_rate, "ood_k": k}
    save_checkpoint(run_dir, model, info)
    return fitted.threshold


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model_training.fit_ood", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", required=True, help="checkpoint dirs or parents of them")
    parser.add_argument("--data", required=True, help="the challenge layout the checkpoints were trained on")
    parser.add_argument("--method", default="composite", choices=["composite", "mahalanobis", "knn", "energy"],
                        help="(default: composite)")
    parser.add_argument("--false-alarm-rate", type=float, default=0.05,
                        help="share of held-out in-distribution images flagged (default: 0.05)")
    parser.add_argument("--k", type=int, default=5, help="neighbour rank for knn (default: 5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from model_training.checkpoint import CheckpointError, find_checkpoint_dirs

    try:
        for path in args.checkpoint:
            for run_dir in find_checkpoint_dirs(path):
                add_detector(run_dir, args.data, args.method, args.false_alarm_rate, args.k)
    except (CheckpointError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
