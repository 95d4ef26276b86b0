"""Small builders shared by tests: challenge-format CSVs and images made on the fly; the repository root."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (tests may live in sub-folders of ``tests/``)."""
HEADER = ["id", "Category", "len"] + [f"attr_{i}" for i in range(1, 11)]


def write_csv(path: Path, rows: Iterable[Mapping[str, object]], header: list[str] | None = None) -> Path:
    header = header or HEADER
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in header})
    return path


def write_image(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")
    return path
