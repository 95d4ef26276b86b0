"""The challenge's submission CSV, assembled from the finished shards in listing order (one shard in
memory at a time). A row whose image failed has empty attribute values, which score as wrong answers:
the summary says how many there are."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq

from backfill.shards import atomic, shard_paths
from catalog.dataset import SUBMISSION_COLUMNS, submission_row
from catalog.taxonomy import ATTRIBUTE_COLUMNS, load_taxonomy

SUBMISSION = "submission.csv"


def write_submission_csv(out: Path, shard_count: int) -> Path:
    """``out/submission.csv`` from shards ``0..shard_count-1`` (ids checked to be integers up front)."""
    taxonomy = load_taxonomy()
    target = out / SUBMISSION
    with atomic(target) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUBMISSION_COLUMNS)
        writer.writeheader()
        for path in shard_paths(out, range(shard_count)):
            table = pq.read_table(path, columns=["id", "category", "error", *ATTRIBUTE_COLUMNS])
            for record in table.to_pylist():
                category = taxonomy.category(record["category"])
                values = {} if record["error"] else {a.name: record[a.column] for a in category.attributes}
                writer.writerow(submission_row(int(record["id"]), category.name, values, taxonomy))
    return target
