"""Label encoding, the stratified validation split and the image dataset.

Images go through :func:`catalog.preprocessing.preprocess` with the checkpoint's spec, the very function
the service calls, so training and serving cannot drift.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from catalog.dataset import LabelRow
from catalog.preprocessing import PreprocessSpec, normalize, preprocess, reduce_on_decode, resize, to_rgb
from catalog.taxonomy import Category
from model_training.augment import Augment
from model_training.config import TrainConfig
from model_training.losses import MISSING


def category_rows(rows: Sequence[LabelRow], category: Category, cfg: TrainConfig) -> list[LabelRow]:
    """The category's rows, at most ``cfg.max_rows`` of them (a seeded sample)."""
    selected = [r for r in rows if r.category == category.name]
    if cfg.max_rows and len(selected) > cfg.max_rows:
        selected = random.Random(cfg.seed).sample(selected, cfg.max_rows)
    return selected


def encode_targets(rows: Sequence[LabelRow], value_orders: Mapping[str, Sequence[str]]) -> np.ndarray:
    """(N, A) int64 value indices in head order; -1 where the label is missing."""
    names = list(value_orders)
    index = {name: {v: i for i, v in enumerate(values)} for name, values in value_orders.items()}
    out = np.full((len(rows), len(names)), MISSING, dtype=np.int64)
    for r, row in enumerate(rows):
        for a, name in enumerate(names):
            value = row.labels.get(name)
            if value is not None:
                out[r, a] = index[name][value]
    return out


def stratified_split(targets: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices with every (attribute, value) represented in proportion.

    Multi-label iterative stratification (Sechidis et al., 2011), simplified: rows are placed rarest
    label first, each into the split whose remaining demand for that label is largest. Rows with no
    labels at all are split at random.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    n, num_attributes = targets.shape
    labels_of = [[(a, int(targets[r, a])) for a in range(num_attributes) if targets[r, a] >= 0] for r in range(n)]
    totals: dict[tuple[int, int], int] = {}
    for labels in labels_of:
        for label in labels:
            totals[label] = totals.get(label, 0) + 1
    fractions = (1 - val_fraction, val_fraction)
    demand = [{label: count * f for label, count in totals.items()} for f in fractions]
    capacity = [n * f for f in fractions]
    shuffled = rng.permutation(n)
    order = sorted(shuffled, key=lambda r: min((totals[lab] for lab in labels_of[r]), default=n + 1))
    assignment = np.zeros(n, dtype=np.int64)
    for r in order:
        labels = labels_of[r]
        if labels:
            rarest = min(labels, key=lambda lab: totals[lab])
            scores = [demand[s][rarest] for s in (0, 1)]
        else:
            scores = list(capacity)
        if scores[0] == scores[1]:
            split = int(capacity[1] > capacity[0]) if capacity[0] != capacity[1] else int(rng.integers(2))
        else:
            split = int(scores[1] > scores[0])
        assignment[r] = split
        capacity[split] -= 1
        for label in labels:
            demand[split][label] -= 1
    return np.flatnonzero(assignment == 0), np.flatnonzero(assignment == 1)


def complete_rows(targets: np.ndarray) -> np.ndarray:
    """Indices of rows with every label present (what the published phase 1 kept)."""
    return np.flatnonzero((targets >= 0).all(axis=1))


def load_image(row: LabelRow, spec: PreprocessSpec) -> Image.Image:
    """Decoded exactly as the service decodes an upload (JPEG draft scale included), upright RGB."""
    if row.image_path is None:
        raise ValueError(f"row {row.id} has no image path")
    with Image.open(row.image_path) as image:
        return to_rgb(reduce_on_decode(image, spec))


class ImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(pixel_values (3, H, W) float32, targets (A,) int64) per row.

    Without a cache every item is decoded from disk and run through ``preprocess``. With
    :meth:`preload` the resized images (the output of the serving path's decode + resize) are kept
    in memory: un-augmented items are then bit-identical to ``preprocess`` and augmented ones are
    augmented at the model's resolution, which is what makes a 2-core CPU demo fast enough. The cache
    costs H*W*3 bytes per row (49 KB at 128 px, 786 KB at 512 px), so it is opt-in.
    """

    def __init__(self, rows: Sequence[LabelRow], targets: np.ndarray, spec: PreprocessSpec,
                 augment: Augment | None = None, seed: int = 0) -> None:
        if len(rows) != len(targets):
            raise ValueError(f"{len(rows)} rows but {len(targets)} target rows")
        self.rows = list(rows)
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.spec = spec
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache: list[Image.Image] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Different augmentations every epoch, reproducible for a given seed."""
        self.epoch = epoch

    def preload(self, threads: int = 2) -> None:
        """Decode and resize every image once (PIL releases the GIL, so threads overlap)."""
        if self.cache is None:
            with ThreadPoolExecutor(max(1, threads)) as pool:
                self.cache = list(pool.map(lambda row: resize(load_image(row, self.spec), self.spec), self.rows))

    def unaugmented(self) -> ImageDataset:
        """The same rows and targets without augmentation, sharing this dataset's image cache as it is now
        (T2 extracts features from the images T1 trained on without decoding them a second time)."""
        view = ImageDataset(self.rows, self.targets.numpy(), self.spec)
        view.cache = self.cache
        return view

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(hash((self.seed, self.epoch, i))) if self.augment is not None else None
        if self.cache is not None:
            image = self.cache[i]
            if self.augment is not None and rng is not None:
                image = resize(self.augment(image, rng), self.spec)
            pixels = normalize(np.asarray(image, dtype=np.uint8), self.spec)
        else:
            image = load_image(self.rows[i], self.spec)
            if self.augment is not None and rng is not None:
                image = self.augment(image, rng)
            pixels = preprocess(image, self.spec)
        return torch.from_numpy(pixels), self.targets[i]
