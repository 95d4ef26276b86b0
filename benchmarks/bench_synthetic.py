"""Throughput of the synthetic catalog renderer: rendering only, and the full CLI path (render, JPEG, write).

    .venv/bin/python benchmarks/bench_synthetic.py [--per-category N] [--workers 1 2] [--difficulty medium]

Prints a markdown table (images/s at 512 px wide, 380-768 px tall). Wall-clock rates depend on what else
the machine runs, so the table also gives CPU milliseconds per image (this process plus its workers),
which other load barely changes; on an idle machine, K cores give at most K * 1000 / (CPU ms) images/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time

from catalog.taxonomy import load_taxonomy
from model_training.synthetic import encode_jpeg, render_image, sample_all
from model_training.synthetic.catalog_writer import build_catalog


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the pool's workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def render_only(n_per_category: int, difficulty: str) -> tuple[int, float, float]:
    rows = sample_all(n_per_category, seed=1)
    for name in load_taxonomy().names:  # warm caches (fonts, noise tiles) outside the timing
        render_image(name, {}, 0, difficulty)
    start, cpu = time.perf_counter(), cpu_seconds()
    for i, row in enumerate(rows):
        encode_jpeg(render_image(row.category, row.full, i, difficulty))
    return len(rows), time.perf_counter() - start, cpu_seconds() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-category", type=int, default=120)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--difficulty", nargs="+", default=["easy", "medium", "hard"])
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    print()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print()
    print("| mode | difficulty | workers | images | wall s | images/s (wall) | CPU ms / image |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for difficulty in args.difficulty:
        n, wall, cpu = render_only(max(10, args.per_category // 3), difficulty)
        print(f"| render + JPEG encode, in process | {difficulty} | 1 | {n} | {wall:.1f} | {n / wall:.0f} "
              f"| {1000 * cpu / n:.1f} |")
    for workers in args.workers:
        cpu = cpu_seconds()
        with tempfile.TemporaryDirectory() as tmp:
            s = build_catalog(tmp, args.per_category, 0.2, seed=0, workers=workers, difficulty="medium",
                              progress=False)
        cpu = cpu_seconds() - cpu
        print(f"| build_catalog (sample, render, write) | medium | {workers} | {s.n_images} | {s.seconds:.1f} | "
              f"{s.images_per_second:.0f} | {1000 * cpu / s.n_images:.1f} |")
    print()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
