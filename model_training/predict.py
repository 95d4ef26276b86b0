"""Write a challenge submission from one or more trained checkpoints.

    python -m model_training.predict --checkpoint RUN_DIR [RUN_DIR ...] --data DIR --split test --out submission.csv
        [--category NAME ...] [--tta flip]

Each ``--checkpoint`` is a checkpoint directory or a parent holding one per category (what
``train --category all`` writes). Several checkpoints of one category predict as one ensemble
(:mod:`model_training.ensemble`: calibrated log-probabilities averaged, decoded once). Decoding is
:mod:`catalog.decoding`, the service's code, with the checkpoint's calibration and consistency rules
(``--no-calibration`` / ``--no-rules`` for ablations).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from catalog.dataset import DatasetError, LabelRow, read_split, write_submission
from catalog.decoding import predict_rows
from catalog.taxonomy import Taxonomy, TaxonomyError, load_taxonomy

# torch and the modules that import it load only when a prediction runs: `--help` answers at once.
if TYPE_CHECKING:
    import torch

    from model_training.checkpoint import CheckpointInfo


def predict_rows_for(model: torch.nn.Module, info: CheckpointInfo, rows: Sequence[LabelRow], *, batch_size: int = 32,
                     device: torch.device | None = None, calibration: bool = True, rules: bool = True,
                     num_workers: int = 0) -> list[LabelRow]:
    """Rows with the decoded value of every attribute of ``info.category``."""
    import torch
    from torch.utils.data import DataLoader

    from model_training.data import ImageDataset, encode_targets
    from model_training.validation import collect_logits

    device = device or torch.device("cpu")
    model.to(device).eval()
    dataset = ImageDataset(rows, encode_targets(rows, info.value_orders), info.preprocessing)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    logits, _ = collect_logits(model, loader, device, info.attribute_names)
    decoded = predict_rows(info.decoder(with_calibration=calibration, with_rules=rules), logits)
    return [LabelRow(row.id, row.category, {name: p.value for name, p in out.items()}, row.image_path)
            for row, out in zip(rows, decoded, strict=True)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model_training.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", required=True,
                        help="checkpoint dirs or parents of them; several of one category make an ensemble")
    parser.add_argument("--data", required=True, help="challenge layout: {split}.csv and {split}_images/")
    parser.add_argument("--split", default="test", choices=["train", "test"], help="(default: test)")
    parser.add_argument("--out", required=True, help="submission CSV to write")
    parser.add_argument("--category", nargs="+", default=None,
                        help="predict only these categories (names or slugs; default: every category with rows)")
    parser.add_argument("--tta", choices=["none", "flip"], default="none",
                        help="flip: average each model's logits with the mirrored image's (default: none)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: 32)")
    parser.add_argument("--num-workers", type=int, default=0, help="(default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--no-calibration", action="store_true", help="decode raw logits (ablation)")
    parser.add_argument("--no-rules", action="store_true", help="decode without consistency rules (ablation)")
    return parser


def selected_rows(rows: Sequence[LabelRow], categories: Sequence[str] | None, taxonomy: Taxonomy) -> list[LabelRow]:
    """The rows of the asked categories (all rows when None); an unknown name raises ``TaxonomyError``."""
    if categories is None:
        return list(rows)
    wanted = {taxonomy.category(name).name for name in categories}
    return [r for r in rows if r.category in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from model_training.checkpoint import CheckpointError
    from model_training.ensemble import group_checkpoints, load_predictor
    from model_training.runtime import resolve_device

    device = resolve_device(args.device)
    taxonomy = load_taxonomy()
    try:
        checkpoints = group_checkpoints(args.checkpoint)
        rows = selected_rows(read_split(args.data, args.split, taxonomy), args.category, taxonomy)
    except (CheckpointError, DatasetError, TaxonomyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    missing = sorted({r.category for r in rows} - set(checkpoints))
    if missing:
        print(f"error: no checkpoint for categor{'y' if len(missing) == 1 else 'ies'} {missing} "
              f"(checkpoints cover {sorted(checkpoints)})", file=sys.stderr)
        return 2
    predicted: dict[int, LabelRow] = {}
    for category, paths in checkpoints.items():
        selected = [r for r in rows if r.category == category]
        if not selected:
            continue
        try:
            loaded = load_predictor(paths, tta_flip=args.tta == "flip", map_location=str(device))
        except CheckpointError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for row in predict_rows_for(loaded.model, loaded.info, selected, batch_size=args.batch_size, device=device,
                                    calibration=not args.no_calibration, rules=not args.no_rules,
                                    num_workers=args.num_workers):
            predicted[row.id] = row
        used = " + ".join(str(p) for p in paths)
        print(f"{category}: {len(selected)} rows predicted with {used}"
              f"{' (ensemble)' if len(paths) > 1 else ''}{' (flip TTA)' if loaded.tta else ''}", flush=True)
    count = write_submission([predicted[r.id] for r in rows], args.out, taxonomy)
    print(f"wrote {count} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
