"""Contact sheets: rendered samples with their labels written underneath, for a person to check.

    python -m model_training.synthetic.preview --category sarees --out docs/synthetic/sarees.png

A label shown with ``*`` was missing in the sampled real row: the image shows the drawn value, the CSV
leaves it empty.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from catalog.taxonomy import load_taxonomy
from model_training.synthetic.motifs import font
from model_training.synthetic.render import render_image
from model_training.synthetic.sampling import sample_rows

CAPTION_LINE = 13


def caption(labels: Mapping[str, str], observed: Mapping[str, str | None] | None = None) -> list[str]:
    lines = []
    for name, value in labels.items():
        missing = observed is not None and observed.get(name) is None
        lines.append(f"{name}: {value}{'*' if missing else ''}")
    return lines


def contact_sheet(items: Sequence[tuple[Image.Image, list[str]]], columns: int = 4, thumb_width: int = 200,
                  title: str = "") -> Image.Image:
    """Thumbnails in a grid, each with its caption lines below it."""
    thumbs = []
    for image, _lines in items:
        h = round(image.height * thumb_width / image.width)
        thumbs.append(image.convert("RGB").resize((thumb_width, h), Image.Resampling.LANCZOS))
    rows = [list(range(i, min(i + columns, len(items)))) for i in range(0, len(items), columns)]
    text_h = max((len(lines) for _, lines in items), default=0) * CAPTION_LINE + 8
    row_h = [max(thumbs[i].height for i in r) + text_h for r in rows]
    top = 26 if title else 4
    sheet = Image.new("RGB", (columns * (thumb_width + 8) + 8, top + sum(row_h) + 4 * len(rows)), "white")
    d = ImageDraw.Draw(sheet)
    if title:
        d.text((8, 6), title, fill=(0, 0, 0), font=font(15))
    y = top
    for r, height in zip(rows, row_h, strict=True):
        for col, i in enumerate(r):
            x = 8 + col * (thumb_width + 8)
            sheet.paste(thumbs[i], (x, y))
            ty = y + thumbs[i].height + 3
            for line in items[i][1]:
                d.text((x, ty), line, fill=(20, 20, 20), font=font(10))
                ty += CAPTION_LINE
        y += height + 4
    return sheet


def save_sheet(sheet: Image.Image, path: str | Path) -> None:
    """PNG with an adaptive palette: labels stay crisp and the file stays small (~300 KB)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(target, optimize=True)


def category_sheet(category: str, n: int = 12, seed: int = 0, difficulty: str = "medium",
                   thumb_width: int = 180) -> Image.Image:
    cat = load_taxonomy().category(category)
    rows = sample_rows(cat.name, n, np.random.default_rng([seed, 99]))
    items = [(render_image(cat.name, r.full, seed * 1000 + i, difficulty), caption(r.full, r.observed))
             for i, r in enumerate(rows)]
    return contact_sheet(items, columns=4, thumb_width=thumb_width,
                         title=f"{cat.name}, difficulty {difficulty} (* = label missing in the row, drawn anyway)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_training.synthetic.preview",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--category", required=True, help="display name or slug")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("-n", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", default="medium", choices=("easy", "medium", "hard"))
    args = parser.parse_args(argv)
    save_sheet(category_sheet(args.category, args.n, args.seed, args.difficulty), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
