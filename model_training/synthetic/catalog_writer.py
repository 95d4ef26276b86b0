"""Write a synthetic catalog in the challenge's exact layout.

    DIR/train.csv  DIR/test.csv (ids, categories)  DIR/test_truth.csv (answer key)
    DIR/category_attributes.parquet  DIR/train_images/{id:06d}.jpg  DIR/test_images/{id:06d}.jpg

The CSVs carry the *observed* real labels (missing ones stay empty); images show the completed labels.
Every image is seeded from (seed, split, id) alone, so the output is byte-identical whatever the number of
worker processes or the order they finish in.
"""

from __future__ import annotations

import multiprocessing
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from tqdm import tqdm

from catalog.dataset import LabelRow, image_name, write_labels
from catalog.taxonomy import load_taxonomy
from model_training.synthetic.difficulty import get_difficulty
from model_training.synthetic.render import encode_jpeg, render_image
from model_training.synthetic.sampling import SampledRow, sample_all

SPLIT_CODES = {"train": 1, "test": 2}


@dataclass(frozen=True)
class CatalogSummary:
    out: Path
    n_train: int
    n_test: int
    seconds: float  # everything: sampling, CSVs, worker start-up, rendering, writing
    render_seconds: float  # rendering and writing the images only
    difficulty: str
    workers: int

    @property
    def n_images(self) -> int:
        return self.n_train + self.n_test

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class _Job:
    path: str
    category: str
    labels: dict[str, str]
    seed: int
    difficulty: str


def image_seed(seed: int, split: str, item_id: int) -> int:
    """The seed of one image: a function of (seed, split, id) only, never of worker order."""
    return int(np.random.SeedSequence([seed, SPLIT_CODES[split], item_id]).generate_state(1)[0])


def split_rows(rows: list[SampledRow], test_fraction: float, seed: int) -> tuple[list[SampledRow], list[SampledRow]]:
    """Per category, a seeded ``test_fraction`` goes to test; each split is then shuffled across categories."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    by_category: dict[str, list[SampledRow]] = {}
    for r in rows:
        by_category.setdefault(r.category, []).append(r)
    train: list[SampledRow] = []
    test: list[SampledRow] = []
    for index, name in enumerate(load_taxonomy().names):
        group = by_category.get(name, [])
        order = np.random.default_rng([seed, 104729, index]).permutation(len(group))
        n_test = round(len(group) * test_fraction)
        test.extend(group[int(i)] for i in order[:n_test])
        train.extend(group[int(i)] for i in order[n_test:])
    mix = np.random.default_rng([seed, 15485863])
    train = [train[int(i)] for i in mix.permutation(len(train))]
    test = [test[int(i)] for i in mix.permutation(len(test))]
    return train, test


def _render_job(job: _Job) -> int:
    data = encode_jpeg(render_image(job.category, job.labels, job.seed, job.difficulty))
    Path(job.path).write_bytes(data)
    return len(data)


def build_catalog(out: str | Path, per_category: int = 200, test_fraction: float = 0.2, seed: int = 0,
                  workers: int = 1, difficulty: str = "medium", *, progress: bool = True) -> CatalogSummary:
    """Sample ``per_category`` real label rows per category, render them and write the challenge layout."""
    get_difficulty(difficulty)
    if per_category < 1:
        raise ValueError(f"per-category must be at least 1, got {per_category}")
    start = time.perf_counter()
    root = Path(out)
    train, test = split_rows(sample_all(per_category, seed), test_fraction, seed)
    jobs: list[_Job] = []
    label_rows: dict[str, list[LabelRow]] = {}
    for split, rows in (("train", train), ("test", test)):
        folder = root / f"{split}_images"
        folder.mkdir(parents=True, exist_ok=True)
        label_rows[split] = [LabelRow(i, r.category, dict(r.observed)) for i, r in enumerate(rows)]
        jobs += [_Job(str(folder / image_name(i)), r.category, r.full, image_seed(seed, split, i), difficulty)
                 for i, r in enumerate(rows)]
    write_labels(label_rows["train"], root / "train.csv")
    write_labels(label_rows["test"], root / "test.csv", with_labels=False)
    write_labels(label_rows["test"], root / "test_truth.csv")
    source = resources.files("catalog").joinpath("data/category_attributes.parquet")
    with source.open("rb") as src, (root / "category_attributes.parquet").open("wb") as dst:
        shutil.copyfileobj(src, dst)

    bar = tqdm(total=len(jobs), desc="rendering", unit="img", disable=not progress)
    render_start = time.perf_counter()
    if workers <= 1:
        for job in jobs:
            _render_job(job)
            bar.update()
    else:
        # fork starts fastest, but a caller holding torch/OpenMP threads (training) can deadlock a forked
        # child, so then the slower spawn is used. Results are identical either way.
        method = "spawn" if "torch" in sys.modules or "fork" not in multiprocessing.get_all_start_methods() else "fork"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_job, jobs, chunksize=8):
                bar.update()
    bar.close()
    end = time.perf_counter()
    return CatalogSummary(root, len(train), len(test), end - start, end - render_start, difficulty, max(1, workers))
