"""``backfill/listing.py``: listings read whole and checked before any work, and cut into shards."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backfill.listing import ListingError, read_listing
from tests.helpers import write_csv

HEADER = ["id", "category", "image"]


def listing(tmp_path, rows, name="listing.csv"):
    return write_csv(tmp_path / name, rows, HEADER)


def test_csv_rows_keep_their_order_and_ids_as_written(tmp_path):
    path = listing(tmp_path, [
        {"id": "007", "category": "Sarees", "image": "images/a.jpg"},
        {"id": "12", "category": "men_tshirts", "image": "/abs/b.png"},
        {"id": "x-3", "category": "Women Tops & Tunics", "image": "s3://bucket/c d.jpg"},
    ])
    read = read_listing(path)
    assert read.table.column("id").to_pylist() == ["007", "12", "x-3"]
    assert read.table.column("slug").to_pylist() == ["sarees", "men_tshirts", "women_tops_tunics"]
    # Relative paths are relative to the listing's folder; absolute paths and URIs stay as written.
    assert read.table.column("image").to_pylist() == [
        f"{tmp_path.resolve()}/images/a.jpg", "/abs/b.png", "s3://bucket/c d.jpg"]
    assert read.rows == 3 and len(read.sha256) == 64


def test_parquet_listing_with_integer_ids(tmp_path):
    path = tmp_path / "listing.parquet"
    pq.write_table(pa.table({"id": [5, 6], "category": ["Kurtis", "Kurtis"], "image": ["a.jpg", "b.jpg"],
                             "extra": [1, 2]}), path)
    read = read_listing(path)
    assert read.table.column_names == ["id", "slug", "image"]
    assert read.table.column("id").to_pylist() == ["5", "6"]


def test_challenge_layout_folder_or_file(tmp_path):
    write_csv(tmp_path / "test.csv", [{"id": 3, "Category": "Kurtis"}, {"id": 41, "Category": "Sarees"}],
              ["id", "Category"])
    for source in (tmp_path, tmp_path / "test.csv"):
        read = read_listing(source)
        assert read.table.column("image").to_pylist() == [
            f"{tmp_path.resolve()}/test_images/000003.jpg", f"{tmp_path.resolve()}/test_images/000041.jpg"]
        assert read.source == str(tmp_path / "test.csv")


@pytest.mark.parametrize(("rows", "message"), [
    ([{"id": "1", "category": "Kurtis", "image": "a"}, {"id": "1", "category": "Kurtis", "image": "b"}],
     r"ids must be unique; repeated: \['1'\]"),
    ([{"id": "1", "category": "Kurtis", "image": "a"}, {"id": "", "category": "Kurtis", "image": "b"}],
     r"empty id at row\(s\) \[1\]"),
    ([{"id": "1", "category": "Kurtis", "image": "a"}, {"id": "2", "category": "Hats", "image": "b"}],
     r"row\(s\) \[1\]: unknown category 'Hats'"),
    ([{"id": "1", "category": "Kurtis", "image": ""}], r"no image at row\(s\) \[0\]"),
    ([], "no rows"),
])
def test_listing_problems_are_named_with_their_rows(tmp_path, rows, message):
    with pytest.raises(ListingError, match=message):
        read_listing(listing(tmp_path, rows))


def test_missing_columns_and_files_are_named(tmp_path):
    with pytest.raises(ListingError, match=r"missing column\(s\) \['image'\]"):
        read_listing(write_csv(tmp_path / "l.csv", [{"id": 1, "category": "Kurtis"}], ["id", "category"]))
    with pytest.raises(ListingError, match="no such listing file"):
        read_listing(tmp_path / "absent.csv")
    with pytest.raises(ListingError, match="integer ids"):
        read_listing(write_csv(tmp_path / "test.csv", [{"id": "a", "Category": "Kurtis"}], ["id", "Category"]))


def test_shards_cut_the_listing_in_order_with_positions(tmp_path):
    read = read_listing(listing(tmp_path, [{"id": str(i), "category": "Kurtis", "image": f"{i}.jpg"}
                                           for i in range(7)]))
    assert read.shard_count(3) == 3 and read.shard_count(7) == 1 and read.shard_count(1) == 7
    last = read.shard(2, 3)
    assert last.column("id").to_pylist() == ["6"]
    assert last.column("row").to_pylist() == [6] and last.column("shard").to_pylist() == [2]
    assert read.shard(1, 3).column("row").to_pylist() == [3, 4, 5]
