"""Render a synthetic catalog in the challenge's layout from real label rows.

    python -m model_training.synthetic --out DIR [--per-category N] [--test-fraction F] [--seed S]
        [--workers K] [--difficulty easy|medium|hard] [--preview PNG]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from PIL import Image

from catalog.dataset import read_split
from catalog.taxonomy import load_taxonomy
from model_training.synthetic.catalog_writer import build_catalog
from model_training.synthetic.difficulty import LEVELS
from model_training.synthetic.preview import contact_sheet, save_sheet


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_training.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--per-category", type=int, default=200, help="label rows sampled per category")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of each category held out as test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--difficulty", default="medium", choices=tuple(LEVELS))
    parser.add_argument("--preview", help="also write a contact sheet of training samples to this PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    summary = build_catalog(args.out, args.per_category, args.test_fraction, args.seed, args.workers,
                            args.difficulty, progress=not args.quiet)
    print(f"wrote {summary.n_train} train + {summary.n_test} test images to {summary.out} "
          f"in {summary.seconds:.1f} s ({summary.images_per_second:.0f} images/s, {summary.workers} workers)")
    if args.preview:
        rows = read_split(args.out, "train")
        picked = []
        for name in load_taxonomy().names:  # three per category
            picked += [r for r in rows if r.category == name][:3]
        items = []
        for r in picked:
            assert r.image_path is not None
            lines = [r.category] + [f"{k}: {v if v is not None else '-'}" for k, v in r.labels.items()]
            items.append((Image.open(r.image_path), lines))
        save_sheet(contact_sheet(items, columns=5, thumb_width=180, title=f"{summary.out} ('-' = label missing)"),
                   args.preview)
        print(f"preview: {args.preview}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
