"""The listing a backfill runs over: one row per product with its ``id``, ``category`` and ``image`` (a
local path or a URI that pyarrow's filesystems read), from a CSV or Parquet file, or the challenge
layout (``test.csv`` beside ``test_images/``). The whole listing is checked before any work starts, as
``catalog.dataset`` checks the challenge's files: a listing problem is named with its row, never skipped.
Only the images are untrusted; they fail their own row later."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from catalog.dataset import image_name
from catalog.manifest import sha256_file
from catalog.taxonomy import Taxonomy, TaxonomyError, load_taxonomy

LISTING_COLUMNS = ("id", "category", "image")
SHOWN = 5
"""At most this many bad rows are quoted in a listing error."""


class ListingError(ValueError):
    """A listing that cannot be backfilled, naming the file, the rows and the problem."""


@dataclass(frozen=True)
class Listing:
    """The validated listing: ``id`` (string, as written), ``slug`` (the category's model) and ``image``
    (absolute path or URI) per row, in the file's order; ``sha256`` identifies its content for resume."""

    table: pa.Table
    source: str
    sha256: str

    @property
    def rows(self) -> int:
        return self.table.num_rows

    def shard_count(self, shard_size: int) -> int:
        return -(-self.rows // shard_size)

    def shard(self, index: int, shard_size: int) -> pa.Table:
        """Shard ``index``: rows ``[index * shard_size, (index + 1) * shard_size)`` with their positions."""
        start = index * shard_size
        part = self.table.slice(start, shard_size)
        part = part.append_column("row", pa.array(np.arange(start, start + part.num_rows, dtype=np.int64)))
        return part.append_column("shard", pa.array(np.full(part.num_rows, index, dtype=np.int32)))


def read_listing(path: str | Path, taxonomy: Taxonomy | None = None) -> Listing:
    """Read and check a listing file, or a challenge folder (``DIR/test.csv`` and ``DIR/test_images/``)."""
    source = Path(path)
    if source.is_dir():
        source = source / "test.csv"
    if not source.is_file():
        raise ListingError(f"{source}: no such listing file")
    table = _read_table(source)
    if table.num_rows == 0:
        raise ListingError(f"{source}: the listing has no rows")
    if "image" not in table.column_names and "Category" in table.column_names:
        table = _challenge_images(table, source)
    table = table.rename_columns(["category" if c == "Category" else c for c in table.column_names])
    missing = [c for c in LISTING_COLUMNS if c not in table.column_names]
    if missing:
        raise ListingError(f"{source}: missing column(s) {missing}; a listing has {list(LISTING_COLUMNS)} "
                           f"(or is the challenge's test.csv beside test_images/); header is {table.column_names}")
    ids = _ids(table.column("id"), source)
    slugs = _slugs(table.column("category"), source, taxonomy or load_taxonomy())
    images = _images(table.column("image"), source)
    return Listing(pa.table({"id": ids, "slug": slugs, "image": images}), str(source), sha256_file(source))


def _read_table(source: Path) -> pa.Table:
    try:
        if source.suffix.lower() == ".parquet":
            return pq.read_table(source)
        # Everything as text: ids are labels ("007" must stay "007"), and paths are paths.
        options = pacsv.ConvertOptions(column_types={"id": pa.string(), "image": pa.string()},
                                       strings_can_be_null=False)
        return pacsv.read_csv(source, convert_options=options)
    except (pa.ArrowInvalid, OSError) as error:
        raise ListingError(f"{source}: cannot read the listing: {error}") from None


def _challenge_images(table: pa.Table, source: Path) -> pa.Table:
    """The challenge layout names no image: it is ``<split>_images/<id:06d>.jpg`` beside ``<split>.csv``."""
    folder = f"{source.stem}_images"
    try:
        names = [f"{folder}/{image_name(int(i))}" for i in table.column("id").to_pylist()]
    except (TypeError, ValueError):
        raise ListingError(f"{source}: a challenge-layout listing needs integer ids") from None
    return table.append_column("image", pa.array(names, pa.string()))


def _rows(mask: pa.Array) -> list[int]:
    return np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[:SHOWN].tolist()


def _ids(column: pa.ChunkedArray, source: Path) -> pa.Array:
    if not (pa.types.is_integer(column.type) or pa.types.is_string(column.type)
            or pa.types.is_large_string(column.type)):
        raise ListingError(f"{source}: ids must be integers or text, not {column.type}")
    ids = pc.cast(column, pa.string()).combine_chunks()
    empty = pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True)
    if pc.any(empty).as_py():
        raise ListingError(f"{source}: empty id at row(s) {_rows(empty)} (rows count from 0)")
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")[:SHOWN].to_pylist()
        raise ListingError(f"{source}: ids must be unique; repeated: {repeated}")
    return ids


def _slugs(column: pa.ChunkedArray, source: Path, taxonomy: Taxonomy) -> pa.Array:
    names = pc.cast(column, pa.string()).combine_chunks()
    known: list[str] = []
    slugs: list[str] = []
    for name in pc.unique(names).to_pylist():  # a handful of distinct values, however long the listing
        try:
            slug = taxonomy.category(name or "").slug
        except TaxonomyError as error:
            bad = pc.fill_null(pc.equal(names, name), True) if name is not None else pc.is_null(names)
            raise ListingError(f"{source}: row(s) {_rows(bad)}: {error}") from None
        known.append(name)
        slugs.append(slug)
    return pc.take(pa.array(slugs, pa.string()), pc.index_in(names, value_set=pa.array(known, pa.string())))


def _images(column: pa.ChunkedArray, source: Path) -> pa.Array:
    """Relative paths are relative to the listing's folder; absolute paths and URIs stay as written."""
    images = pc.cast(column, pa.string()).combine_chunks()
    empty = pc.fill_null(pc.equal(pc.utf8_length(images), 0), True)
    if pc.any(empty).as_py():
        raise ListingError(f"{source}: no image at row(s) {_rows(empty)} (rows count from 0)")
    as_written = pc.or_(pc.match_substring(images, "://"), pc.starts_with(images, "/"))
    joined = pc.binary_join_element_wise(str(source.resolve().parent) + "/", images, "")
    return pc.if_else(as_written, images, joined)
