"""The challenge's real label table (70,213 train rows, no images), shipped compressed in the package.

The synthetic catalog samples its label rows from here, so the real class imbalance, co-occurrence
and missing-label pattern carry over; tests use it as realistic truth.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from functools import cache
from pathlib import Path

from catalog.dataset import LabelRow, read_labels
from catalog.package_data import package_data


@cache
def load_real_labels() -> tuple[LabelRow, ...]:
    source = package_data("train_labels.csv.gz")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "train_labels.csv"
        with source.open("rb") as raw, gzip.open(raw) as unzipped, target.open("wb") as out:
            shutil.copyfileobj(unzipped, out)
        return tuple(read_labels(target))
