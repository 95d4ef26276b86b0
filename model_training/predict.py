"""Write a challenge submission from one or more trained checkpoints.

    python -m model_training.predict --checkpoint RUN_DIR [RUN_DIR ...] --data DIR --split test --out submission.csv

Each ``--checkpoint`` is a checkpoint directory or a parent holding one per category (what
``train --category all`` writes). Decoding is :mod:`catalog.decoding`, the service's code, with the
checkpoint's calibration and consistency rules (``--no-calibration`` / ``--no-rules`` for ablations).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from catalog.dataset import DatasetError, LabelRow, read_split, write_submission
from catalog.decoding import predict_rows
from catalog.taxonomy import load_taxonomy
from model_training.checkpoint import CheckpointError, CheckpointInfo, find_checkpoint_dirs, load_checkpoint, read_info
from model_training.data import ImageDataset, encode_targets
from model_training.model import CategoryModel
from model_training.runtime import resolve_device
from model_training.validation import collect_logits


def resolve_checkpoints(paths: Sequence[str | Path]) -> dict[str, Path]:
    """Category name -> checkpoint directory; a parent directory contributes every checkpoint below it."""
    found: dict[str, Path] = {}
    for path in paths:
        for candidate in find_checkpoint_dirs(path):
            category = read_info(candidate).category
            if category in found:
                raise CheckpointError(f"two checkpoints for {category!r}: {found[category]} and {candidate}")
            found[category] = candidate
    return found


def predict_rows_for(model: CategoryModel, info: CheckpointInfo, rows: Sequence[LabelRow], *, batch_size: int = 32,
                     device: torch.device | None = None, calibration: bool = True, rules: bool = True,
                     num_workers: int = 0) -> list[LabelRow]:
    """Rows with the decoded value of every attribute of ``info.category``."""
    device = device or torch.device("cpu")
    model.to(device).eval()
    dataset = ImageDataset(rows, encode_targets(rows, info.value_orders), info.preprocessing)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    logits, _ = collect_logits(model, loader, device, info.attribute_names)
    decoded = predict_rows(info.decoder(with_calibration=calibration, with_rules=rules), logits)
    return [LabelRow(row.id, row.category, {name: p.value for name, p in out.items()}, row.image_path)
            for row, out in zip(rows, decoded, strict=True)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_training.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", required=True, help="checkpoint dirs or parents of them")
    parser.add_argument("--data", required=True, help="challenge layout: {split}.csv and {split}_images/")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--out", required=True, help="submission CSV to write")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-calibration", action="store_true", help="decode raw logits (ablation)")
    parser.add_argument("--no-rules", action="store_true", help="decode without consistency rules (ablation)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    taxonomy = load_taxonomy()
    try:
        checkpoints = resolve_checkpoints(args.checkpoint)
        rows = read_split(args.data, args.split, taxonomy)
    except (CheckpointError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    missing = sorted({r.category for r in rows} - set(checkpoints))
    if missing:
        print(f"error: no checkpoint for categor{'y' if len(missing) == 1 else 'ies'} {missing} "
              f"(checkpoints cover {sorted(checkpoints)})", file=sys.stderr)
        return 2
    predicted: dict[int, LabelRow] = {}
    for category, path in checkpoints.items():
        selected = [r for r in rows if r.category == category]
        if not selected:
            continue
        model, info = load_checkpoint(path, map_location=str(device))
        for row in predict_rows_for(model, info, selected, batch_size=args.batch_size, device=device,
                                    calibration=not args.no_calibration, rules=not args.no_rules,
                                    num_workers=args.num_workers):
            predicted[row.id] = row
        print(f"{category}: {len(selected)} rows predicted with {path}", flush=True)
    count = write_submission([predicted[r.id] for r in rows], args.out, taxonomy)
    print(f"wrote {count} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
