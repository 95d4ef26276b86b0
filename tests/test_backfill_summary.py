"""``backfill/summary.py``: counts, errors by code and where the time went, from the rows written."""

from __future__ import annotations

import pyarrow as pa
import pytest

from backfill.schema import STAGE_SCHEMA
from backfill.shards import write_shard
from backfill.summary import RunStats, Summary, output_errors


def shard(errors: list[str | None]) -> pa.Table:
    return pa.Table.from_pylist([{"id": str(i), "row": i, "shard": 0, "error": e, "read_s": 0.5, "decode_s": 1.0,
                                  "infer_s": 0.5} for i, e in enumerate(errors)], schema=STAGE_SCHEMA)


def test_stats_add_up_rows_errors_and_stage_seconds(tmp_path):
    stats = RunStats()
    stats.add_shard(shard([None, "invalid_image", None, "read_failed"]))
    stats.add_shard(shard(["invalid_image", None]))
    assert (stats.rows, stats.shards) == (6, 2)
    assert stats.errors == {"invalid_image": 2, "read_failed": 1}
    assert stats.seconds == pytest.approx({"read": 3.0, "decode": 6.0, "infer": 3.0})
    write_shard(tmp_path, 0, shard(["invalid_image", None]))
    write_shard(tmp_path, 1, shard([None, "payload_too_large", "invalid_image"]))
    assert output_errors(tmp_path, [0, 1]) == {"invalid_image": 2, "payload_too_large": 1}

    summary = Summary(stats=stats, wall_s=2.0, actors=1, total_rows=10, skipped_rows=4,
                      all_errors={"invalid_image": 3}, outputs=("out/shards",))
    assert summary.images_per_s == 3.0 and summary.per_actor_images_per_s == 2.0
    text = summary.format()
    assert "backfilled 6 images in 2 shards in 2.0 s: 3.0 images/s" in text
    assert "read 3.0 s (25%), decode 6.0 s (50%), infer 3.0 s (25%)" in text
    assert "errors this run: invalid_image 2, read_failed 1" in text
    assert "skipped 4 rows already done" in text and "wrote out/shards" in text


def test_an_empty_run_divides_by_nothing():
    summary = Summary(stats=RunStats(), wall_s=0.0, actors=0, total_rows=5, skipped_rows=5, all_errors={},
                      outputs=())
    assert summary.images_per_s == 0.0 and summary.per_actor_images_per_s == 0.0
    assert "errors this run: none" in summary.format()
