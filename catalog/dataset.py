"""The challenge's file formats: ``train.csv``/``test.csv`` with an image folder, and submissions.

A missing label stays ``None`` (never a class); every bad row raises :class:`DatasetError` naming the
file and the row. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from catalog.taxonomy import ATTRIBUTE_COLUMNS, Taxonomy, TaxonomyError, load_taxonomy

SUBMISSION_COLUMNS: tuple[str, ...] = ("id", "Category", "len", *ATTRIBUTE_COLUMNS)
UNUSED_SLOT = "dummy"
"""What a submission writes in the slots past a category's ``len``; the scorer ignores them."""


class DatasetError(ValueError):
    """A row or file that does not follow the challenge's format."""


@dataclass(frozen=True)
class LabelRow:
    """One product: its id, category and the labels present (``None`` where missing)."""

    id: int
    category: str
    labels: dict[str, str | None] = field(default_factory=dict)
    image_path: Path | None = None

    def label(self, attribute: str) -> str | None:
        return self.labels.get(attribute)


def image_name(item_id: int) -> str:
    return f"{item_id:06d}.jpg"


def _fail(path: Path, line: int, message: str) -> DatasetError:
    return DatasetError(f"{path}, line {line}: {message}")


def read_labels(
    csv_path: str | Path,
    image_dir: str | Path | None = None,
    taxonomy: Taxonomy | None = None,
    *,
    require_images: bool = True,
) -> list[LabelRow]:
    """Read ``train.csv``, ``test.csv``, a truth file or a submission.

    Files with only ``id,Category`` (``test.csv``) give rows with every label missing. When
    ``image_dir`` is given, each row's image path is set and, with ``require_images``, must exist.
    """
    taxonomy = taxonomy or load_taxonomy()
    path = Path(csv_path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    images = Path(image_dir) if image_dir is not None else None
    if images is not None and require_images and not images.is_dir():
        raise DatasetError(f"{images}: image folder does not exist (needed by {path})")
    rows: list[LabelRow] = []
    seen: dict[int, int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for required in ("id", "Category"):
            if required not in header:
                raise DatasetError(f"{path}: missing column {required!r}; header is {header}")
        has_labels = "attr_1" in header
        for line, raw in enumerate(reader, start=2):
            rows.append(_parse_row(raw, path, line, taxonomy, has_labels, images, require_images, seen))
    return rows


def _parse_row(
    raw: Mapping[str, str | None],
    path: Path,
    line: int,
    taxonomy: Taxonomy,
    has_labels: bool,
    images: Path | None,
    require_images: bool,
    seen: dict[int, int],
) -> LabelRow:
    raw_id = (raw.get("id") or "").strip()
    try:
        item_id = int(raw_id)
    except ValueError:
        raise _fail(path, line, f"id {raw_id!r} is not an integer") from None
    if item_id < 0:
        raise _fail(path, line, f"id {item_id} is negative")
    if item_id in seen:
        raise _fail(path, line, f"id {item_id} repeats the row on line {seen[item_id]}")
    seen[item_id] = line
    try:
        category = taxonomy.category(raw.get("Category") or "")
    except TaxonomyError as error:
        raise _fail(path, line, f"id {item_id}: {error}") from None
    labels: dict[str, str | None] = {a.name: None for a in category.attributes}
    if has_labels:
        declared_len = (raw.get("len") or "").strip()
        if declared_len and declared_len != str(len(category)):
            raise _fail(
                path, line,
                f"id {item_id}: len {declared_len} disagrees with the taxonomy, which gives "
                f"{category.name!r} {len(category)} attributes",
            )
        for attribute in category.attributes:
            value = (raw.get(attribute.column) or "").strip()
            if not value:
                continue
            try:
                labels[attribute.name] = attribute.validate(value)
            except TaxonomyError as error:
                raise _fail(path, line, f"id {item_id}, {attribute.column}: {error}") from None
    image_path = None
    if images is not None:
        image_path = images / image_name(item_id)
        if require_images and not image_path.is_file():
            raise _fail(path, line, f"id {item_id}: image {image_path} does not exist")
    return LabelRow(id=item_id, category=category.name, labels=labels, image_path=image_path)


def read_split(data_dir: str | Path, split: str, taxonomy: Taxonomy | None = None) -> list[LabelRow]:
    """Rows of ``DIR/{split}.csv`` with images from ``DIR/{split}_images``."""
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}; valid splits: 'train', 'test'")
    root = Path(data_dir)
    return read_labels(root / f"{split}.csv", root / f"{split}_images", taxonomy)


def submission_row(item_id: int, category: str, predictions: Mapping[str, str | None],
                   taxonomy: Taxonomy | None = None) -> dict[str, str]:
    """One challenge-format row; slots past the category's ``len`` say ``dummy``.

    An attribute without a prediction (abstained) is written as an empty cell.
    """
    cat = (taxonomy or load_taxonomy()).category(category)
    row = {"id": str(item_id), "Category": cat.name, "len": str(len(cat))}
    for column in ATTRIBUTE_COLUMNS:
        row[column] = UNUSED_SLOT
    for attribute in cat.attributes:
        value = predictions.get(attribute.name)
        if value is not None:
            attribute.validate(value)
        row[attribute.column] = value or ""
    unknown = set(predictions) - set(cat.attribute_names)
    if unknown:
        raise DatasetError(
            f"id {item_id}: {cat.name!r} has no attribute(s) {sorted(unknown)}; "
            f"its attributes: {list(cat.attribute_names)}"
        )
    return row


def write_submission(rows: Iterable[LabelRow], path: str | Path, taxonomy: Taxonomy | None = None) -> int:
    """Write rows in the challenge's submission format; returns how many rows were written."""
    taxonomy = taxonomy or load_taxonomy()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUBMISSION_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(submission_row(row.id, row.category, row.labels, taxonomy))
            count += 1
    return count


def write_labels(rows: Sequence[LabelRow], path: str | Path, *, with_labels: bool = True,
                 taxonomy: Taxonomy | None = None) -> None:
    """Write a ``train.csv``/``test_truth.csv`` (missing labels empty) or a ``test.csv`` (ids only)."""
    taxonomy = taxonomy or load_taxonomy()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        if not with_labels:
            writer = csv.writer(handle)
            writer.writerow(["id", "Category"])
            for row in rows:
                writer.writerow([row.id, row.category])
            return
        dict_writer = csv.DictWriter(handle, fieldnames=SUBMISSION_COLUMNS)
        dict_writer.writeheader()
        for row in rows:
            cat = taxonomy.category(row.category)
            out = {"id": str(row.id), "Category": cat.name, "len": str(len(cat))}
            out.update({column: "" for column in ATTRIBUTE_COLUMNS})
            for attribute in cat.attributes:
                value = row.labels.get(attribute.name)
                out[attribute.column] = attribute.validate(value) if value is not None else ""
            dict_writer.writerow(out)


def read_predictions(csv_path: str | Path, taxonomy: Taxonomy | None = None) -> dict[int, LabelRow]:
    """Read a submission for scoring: values are kept as written, even outside the taxonomy.

    The scorer must count an invalid value as a wrong answer rather than refuse the whole file, so
    only the structure is checked here (integer ids, no repeats, a known category).
    """
    taxonomy = taxonomy or load_taxonomy()
    path = Path(csv_path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    rows: dict[int, LabelRow] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in ("id", "Category") if c not in header]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; header is {header}")
        for line, raw in enumerate(reader, start=2):
            raw_id = (raw.get("id") or "").strip()
            try:
                item_id = int(raw_id)
            except ValueError:
                raise _fail(path, line, f"id {raw_id!r} is not an integer") from None
            if item_id in rows:
                raise _fail(path, line, f"id {item_id} appears twice")
            try:
                category = taxonomy.category(raw.get("Category") or "")
            except TaxonomyError as error:
                raise _fail(path, line, f"id {item_id}: {error}") from None
            labels = {
                a.name: ((raw.get(a.column) or "").strip() or None) for a in category.attributes
            }
            rows[item_id] = LabelRow(id=item_id, category=category.name, labels=labels)
    return rows
