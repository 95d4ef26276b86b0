"""Render the web page's sample gallery: a few synthetic catalog photos per category.

    python scripts/make_ui_samples.py [--out service/static/samples] [--per-category 2]

Each sample is drawn from a real label row (the synthetic renderer), so the gallery shows what the
demo model was trained on; ``samples.json`` lists file, category and the row's true labels.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from catalog.real_labels import load_real_labels
from catalog.taxonomy import load_taxonomy
from model_training.synthetic import render_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("service/static/samples"))
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    rows = load_real_labels()
    entries = []
    for category in load_taxonomy().values():
        pool = [r for r in rows if r.category == category.name and sum(v is not None for v in r.labels.values())
                >= len(category) - 1]
        for k, row in enumerate(rng.sample(pool, args.per_category)):
            labels = {name: value for name, value in row.labels.items() if value is not None}
            image = render_image(category.name, labels, seed=args.seed * 1000 + k)
            name = f"{category.slug}_{k + 1}.jpg"
            image.convert("RGB").save(args.out / name, format="JPEG", quality=82, optimize=True)
            entries.append({"file": name, "category": category.slug, "labels": labels})
    (args.out / "samples.json").write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(entries)} samples to {args.out}")


if __name__ == "__main__":
    main()
