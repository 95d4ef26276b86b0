"""``backfill/shards.py``: shards are written whole or not at all, and assembled from rows that come
back in any order, some of them twice."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backfill.schema import OUTPUT_SCHEMA, STAGE_SCHEMA
from backfill.shards import ShardAssembler, atomic, finished_shards, part_name, shard_folder, write_shard


def rows(shard: int, positions: list[int]) -> pa.Table:
    records = [{"id": f"id{p}", "row": p, "shard": shard, "read_s": 0.1, "decode_s": 0.2, "infer_s": 0.3}
               for p in positions]
    return pa.Table.from_pylist(records, schema=STAGE_SCHEMA)


def test_a_shard_is_handed_over_when_its_last_row_arrives_sorted_and_without_repeats():
    assembler = ShardAssembler({0: 3, 1: 2})
    assert assembler.add(pa.concat_tables([rows(1, [4]), rows(0, [2, 0])])) == []
    assert assembler.pending == {0: 1, 1: 1}
    done = assembler.add(pa.concat_tables([rows(0, [2, 1]), rows(1, [3])]))  # row 2 again: a retried task
    assert [(k, t.column("row").to_pylist()) for k, t in done] == [(0, [0, 1, 2]), (1, [3, 4])]
    assert assembler.pending == {}
    with pytest.raises(RuntimeError, match="shard 0, which is not pending"):
        assembler.add(rows(0, [0]))


def test_written_shards_have_the_output_schema_and_are_found_with_their_row_counts(tmp_path):
    path = write_shard(tmp_path, 7, rows(7, [0, 1]))
    assert path == shard_folder(tmp_path) / "part-00007.parquet" == shard_folder(tmp_path) / part_name(7)
    assert pq.read_schema(path).remove_metadata() == OUTPUT_SCHEMA
    assert finished_shards(tmp_path) == {7: 2}


def test_a_write_that_fails_leaves_nothing_and_a_killed_writes_leftover_is_removed(tmp_path):
    target = shard_folder(tmp_path) / part_name(0)
    with pytest.raises(OSError), atomic(target) as temporary:
        temporary.write_bytes(b"half a shard")
        raise OSError("disk full")
    assert not target.exists() and list(shard_folder(tmp_path).iterdir()) == []
    leftover = shard_folder(tmp_path) / f".{part_name(1)}.4242.tmp"  # what a SIGKILL mid-write leaves
    leftover.write_bytes(b"half a shard")
    assert finished_shards(tmp_path) == {} and not leftover.exists()
    assert finished_shards(tmp_path / "nothing-yet") == {}
