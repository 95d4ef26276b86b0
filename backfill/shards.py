"""Deterministic shards: shard ``k`` holds the listing's rows ``[k * S, (k + 1) * S)`` in listing order
and is written once, whole, as ``shards/part-{k:05d}.parquet`` (to a temporary name, then renamed), so a
shard file that exists is complete, and a run interrupted anywhere loses only the shards in flight."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backfill.schema import OUTPUT_SCHEMA

SHARDS = "shards"
PART = re.compile(r"^part-(\d{5,})\.parquet$")
TEMPORARY_SUFFIX = ".tmp"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def shard_folder(out: Path) -> Path:
    return out / SHARDS


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed to ``path`` when the block succeeds, so a
    reader (or a resumed run) sees the whole file or none of it. The name is dot-prefixed, so dataset
    readers skip it, and a later run removes it if this one dies mid-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}"
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_shard(out: Path, index: int, table: pa.Table) -> Path:
    """Write one finished shard atomically, in the output schema (the internal columns dropped)."""
    final = shard_folder(out) / part_name(index)
    with atomic(final) as temporary:
        pq.write_table(table.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA), temporary)
    return final


def finished_shards(out: Path) -> dict[int, int]:
    """Shard index -> row count of every shard written (its Parquet footer; no data is read). Temporary
    files of an interrupted write are removed."""
    folder = shard_folder(out)
    if not folder.is_dir():
        return {}
    found: dict[int, int] = {}
    for path in folder.iterdir():
        if path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX):
            path.unlink()
        elif match := PART.match(path.name):
            found[int(match.group(1))] = pq.read_metadata(path).num_rows
    return found


def shard_paths(out: Path, indices: Iterable[int]) -> list[Path]:
    return [shard_folder(out) / part_name(k) for k in sorted(indices)]


class ShardAssembler:
    """Collects the rows of each pending shard as they come back from the pipeline (in any order, and at
    least once each), and hands a shard over when every one of its rows is in, sorted by listing row."""

    def __init__(self, expected: dict[int, int]) -> None:
        self._expected = dict(expected)
        self._parts: dict[int, list[pa.Table]] = {k: [] for k in expected}
        self._seen: dict[int, set[int]] = {k: set() for k in expected}

    @property
    def pending(self) -> dict[int, int]:
        """Shards not handed over yet -> rows still missing."""
        return {k: self._expected[k] - len(self._seen[k]) for k in self._expected}

    def add(self, table: pa.Table) -> list[tuple[int, pa.Table]]:
        finished = []
        shards = table.column("shard").to_numpy()
        for index in np.unique(shards).tolist():
            if index not in self._expected:
                raise RuntimeError(f"the pipeline returned rows of shard {index}, which is not pending")
            part = table.filter(pa.array(shards == index))
            self._parts[index].append(part)
            self._seen[index].update(part.column("row").to_pylist())
            if len(self._seen[index]) == self._expected[index]:
                finished.append((index, self._finish(index)))
        return finished

    def _finish(self, index: int) -> pa.Table:
        table = pa.concat_tables(self._parts.pop(index)).sort_by("row")
        del self._expected[index], self._seen[index]
        rows = table.column("row").to_numpy()
        # A task Ray retried may have delivered a row twice: keep its first copy (they are equal).
        keep = np.concatenate([[True], rows[1:] != rows[:-1]]) if len(rows) else np.ones(0, dtype=bool)
        return table.filter(pa.array(keep)) if not keep.all() else table

