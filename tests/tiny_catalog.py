"""A tiny challenge-layout catalog whose labels are drawn into its images, and the flags of a training run
on it that takes seconds (a test backbone at 32 px): for the training and batch-prediction tests."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from catalog.dataset import LabelRow, read_labels, write_labels
from catalog.real_labels import load_real_labels

COLORS = {"default": (120, 120, 120), "multicolor": (230, 160, 20), "white": (250, 250, 250), "black": (15, 15, 15)}


def draw(row: LabelRow, path: Path, size: int = 48) -> None:
    """Colour is the garment's fill, a printed pattern adds stripes, long sleeves widen the shape."""
    labels = row.labels
    image = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(image)
    fill = COLORS.get(labels.get("color") or "", (90, 60, 200))
    wide = labels.get("sleeve_length") == "long sleeves"
    d.rectangle([4 if wide else 14, 8, size - (4 if wide else 14), size - 6], fill=fill)
    if labels.get("pattern") == "printed":
        for x in range(0, size, 6):
            d.line([x, 8, x, size - 6], fill=(200, 20, 20), width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95)


def make_catalog(root: Path, n_train: int = 48, n_test: int = 24, category: str = "Men Tshirts", seed: int = 0) -> Path:
    """A tiny challenge-layout catalog whose labels (sampled from the real table, missing ones included)
    are visible in the images."""
    real = [r for r in load_real_labels() if r.category == category]
    picked = random.Random(seed).sample(real, n_train + n_test)
    rows = [LabelRow(id=i, category=r.category, labels=dict(r.labels)) for i, r in enumerate(picked)]
    train, test = rows[:n_train], rows[n_train:]
    for split, split_rows in (("train", train), ("test", test)):
        for row in split_rows:
            draw(row, root / f"{split}_images" / f"{row.id:06d}.jpg")
    write_labels(train, root / "train.csv")
    write_labels(test, root / "test.csv", with_labels=False)
    write_labels(test, root / "test_truth.csv")
    return root


TINY = ["--backbone", "convnext-test", "--image-size", "32", "--batch-size", "8", "--num-workers", "0",
        "--head-hidden", "16", "--no-progress", "--lr", "3e-3", "--head-lr", "3e-3"]


def make_catalogs(root: Path, categories: list[str], n_train: int = 24, n_test: int = 8) -> Path:
    """One challenge-layout catalog holding several tiny ones (ids made unique per category)."""
    train: list[LabelRow] = []
    test: list[LabelRow] = []
    for k, category in enumerate(categories):
        part = make_catalog(root / f".part{k}", n_train=n_train, n_test=n_test, category=category, seed=k)
        for split, rows, out in (("train", part / "train.csv", train), ("test", part / "test_truth.csv", test)):
            for row in read_labels(rows, part / f"{split}_images"):
                assert row.image_path is not None
                new = LabelRow(row.id + 1000 * k, row.category, dict(row.labels))
                (root / f"{split}_images").mkdir(parents=True, exist_ok=True)
                row.image_path.replace(root / f"{split}_images" / f"{new.id:06d}.jpg")
                out.append(new)
    write_labels(train, root / "train.csv")
    write_labels(test, root / "test.csv", with_labels=False)
    write_labels(test, root / "test_truth.csv")
    return root
