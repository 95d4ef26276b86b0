"""What a backfill run did and where its time went, added up on the driver from the rows that come back
(each carries the seconds its read, decode and inference took in the workers)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backfill.shards import shard_paths

STAGES = ("read", "decode", "infer")


@dataclass
class RunStats:
    """This run's rows (the shards it wrote), their errors by code and the worker seconds per stage."""

    rows: int = 0
    shards: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    first_rows_s: float | None = None
    """When the first rows came back, from the pipeline's start: workers starting and models loading."""
    first_rows: int = 0

    def rows_back(self, count: int, elapsed_s: float) -> None:
        if self.first_rows_s is None:
            self.first_rows_s, self.first_rows = elapsed_s, count

    def add_shard(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        self.shards += 1
        self.errors.update(error_counts(table.column("error")))
        for stage in STAGES:
            self.seconds[stage] += pc.sum(table.column(f"{stage}_s")).as_py() or 0.0


@dataclass(frozen=True)
class Summary:
    """The end of a run: this run's stats and the whole output's (skipped shards included)."""

    stats: RunStats
    wall_s: float
    """From the pipeline's start to its last shard (Ray start-up and listing checks excluded)."""
    actors: int
    total_rows: int
    skipped_rows: int
    all_errors: dict[str, int]
    outputs: tuple[str, ...]

    @property
    def images_per_s(self) -> float:
        return self.stats.rows / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steady_images_per_s(self) -> float:
        """The rate once the first rows were back (start-up excluded): what a longer listing runs at."""
        first = self.stats.first_rows_s
        if first is None or self.wall_s <= first:
            return self.images_per_s
        return (self.stats.rows - self.stats.first_rows) / (self.wall_s - first)

    @property
    def per_actor_images_per_s(self) -> float:
        """Images one actor infers per second of its busy time: what N more actors would add."""
        busy = self.stats.seconds["infer"]
        return self.stats.rows / busy if busy > 0 else 0.0

    def format(self) -> str:
        s = self.stats
        busy = sum(s.seconds.values()) or 1.0
        where = ", ".join(f"{stage} {s.seconds[stage]:.1f} s ({100 * s.seconds[stage] / busy:.0f}%)"
                          for stage in STAGES)
        lines = [
            f"backfilled {s.rows} images in {s.shards} shards in {self.wall_s:.1f} s: {self.images_per_s:.1f} images/s "
            f"({self.actors} inference actor(s), {self.per_actor_images_per_s:.1f} images/s per busy actor)",
            f"start-up {s.first_rows_s or 0.0:.1f} s (until the first rows came back), then "
            f"{self.steady_images_per_s:.1f} images/s",
            f"skipped {self.skipped_rows} rows already done (--resume); output holds {self.total_rows} rows",
            f"worker time: {where}",
            "errors this run: " + _errors(s.errors),
            "errors in the whole output: " + _errors(self.all_errors),
            *(f"wrote {path}" for path in self.outputs),
        ]
        return "\n".join(lines)


def error_counts(column: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Rows per error code in an ``error`` column (nulls are rows without one)."""
    return {item["values"]: item["counts"] for item in pc.value_counts(column.drop_null()).to_pylist()}


def output_errors(out: Path, indices: Iterable[int]) -> dict[str, int]:
    """Error codes across written shards, reading only their ``error`` column."""
    counts: Counter[str] = Counter()
    for path in shard_paths(out, indices):
        counts.update(error_counts(pq.read_table(path, columns=["error"]).column("error")))
    return dict(counts)


def _errors(counts: dict[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{code} {n}" for code, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
