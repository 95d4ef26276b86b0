"""Throughput of the synthetic catalog renderer: rendering only, and the full CLI path (render, JPEG, write).

    .venv/bin/python benchmarks/bench_synthetic.py [--per-category N] [--workers 1 2] [--difficulty medium]

Prints a markdown table (images/s at 512 px wide, 380-768 px tall).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from catalog.taxonomy import load_taxonomy
from model_training.synthetic import encode_jpeg, render_image, sample_all
from model_training.synthetic.catalog_writer import build_catalog


def render_only(n_per_category: int, difficulty: str) -> float:
    rows = sample_all(n_per_category, seed=1)
    for name in load_taxonomy().names:  # warm caches (fonts, noise tiles) outside the timing
        render_image(name, {}, 0, difficulty)
    start = time.perf_counter()
    for i, row in enumerate(rows):
        encode_jpeg(render_image(row.category, row.full, i, difficulty))
    return len(rows) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-category", type=int, default=120)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--difficulty", nargs="+", default=["easy", "medium", "hard"])
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    print()
    print("| mode | difficulty | workers | images | seconds | images/s | images/s, rendering phase |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for difficulty in args.difficulty:
        n = max(10, args.per_category // 3)
        rate = render_only(n, difficulty)
        print(f"| render + JPEG encode, in process | {difficulty} | 1 | {5 * n} | {5 * n / rate:.1f} | {rate:.0f} "
              f"| {rate:.0f} |")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            s = build_catalog(tmp, args.per_category, 0.2, seed=0, workers=workers, difficulty="medium",
                              progress=False)
        print(f"| build_catalog (sample, render, write) | medium | {workers} | {s.n_images} | {s.seconds:.1f} | "
              f"{s.images_per_second:.0f} | {s.render_images_per_second:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
