"""Export training checkpoints into a versioned ONNX model repository.

    python -m export --checkpoint RUN_DIR [RUN_DIR ...] --repository MODELS_DIR [--version N]
                     [--precision fp32|fp16|int8] [--validation-data DIR] [--tta flip] [--torch-export]

RUN_DIR is one checkpoint directory or a parent holding one per category (``train --category all``).
Several checkpoints of one category are exported as ONE ensemble model (model_training/ensemble.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from catalog.dataset import DatasetError
from catalog.manifest import ManifestError
from export import DEFAULT_MAX_SCORE_DROP_POINTS
from export.precision import PRECISIONS, PrecisionError
from export.repository import RepositoryError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, nargs="+",
                        help="checkpoint dirs or run dirs of them; several of one category make one ensemble model")
    parser.add_argument("--repository", required=True, type=Path, help="model repository root (MODELS_DIR)")
    parser.add_argument("--version", type=int, default=None, help="version number (default: next free one)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="(default: fp32)")
    parser.add_argument("--tta", choices=["none", "flip"], default="none",
                        help="flip: the graph averages logits over the image and its mirror (default: none)")
    parser.add_argument("--validation-data", type=Path, default=None,
                        help="challenge-layout data dir whose labelled images verify the export")
    parser.add_argument("--validation-images", type=int, default=64, help="images per category to verify on")
    parser.add_argument("--max-score-drop", type=float, default=DEFAULT_MAX_SCORE_DROP_POINTS,
                        help="largest competition-score drop in points allowed for fp16/int8")
    parser.add_argument("--force", action="store_true", help="export even when the score drop is too large")
    parser.add_argument("--torch-export", action="store_true",
                        help="also write model.pt2 (torch.export, verified) for the service's PyTorch backend")
    args = parser.parse_args(argv)
    # torch loads only now, so `--help` answers at once.
    from export.exporter import ExportError, export_checkpoint
    from model_training.checkpoint import CheckpointError
    from model_training.ensemble import group_checkpoints

    # onnxruntime's quantiser logs every tensor at INFO on the root logger; keep only our own INFO lines.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("export").setLevel(logging.INFO)
    try:
        for checkpoints in group_checkpoints(args.checkpoint).values():
            result = export_checkpoint(
                checkpoints, args.repository, version_number=args.version, precision=args.precision,
                validation_data=args.validation_data, validation_images=args.validation_images,
                max_score_drop_points=args.max_score_drop, force=args.force, tta_flip=args.tta == "flip",
                torch_export=args.torch_export,
            )
            checks = result.manifest.verification
            fp32 = checks["fp32"]
            line = (f"{result.manifest.slug:<18} v{result.manifest.version} {result.manifest.precision}  "
                    f"fp32 max|diff| {fp32['max_abs_diff']:.2e} argmax {fp32['argmax_agreement']:.4f}")
            if args.precision != "fp32":
                line += f"  {args.precision} argmax {checks[args.precision]['argmax_agreement']:.4f}"
                if "score" in checks:
                    line += f"  score drop {checks['score']['drop_points']:+.2f} pts"
            print(f"{line}  -> {result.path}")
    except (CheckpointError, ExportError, PrecisionError, RepositoryError, ManifestError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
