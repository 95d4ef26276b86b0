"""What a backfill's output folder is the output of: ``backfill.json`` records the listing (by content),
the shard size, every model version (by checksum) and the threshold. ``--resume`` continues only the
same job; anything else that would mix two jobs' rows in one dataset is refused, naming the difference."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backfill.shards import atomic, finished_shards

JOB_FILE = "backfill.json"
FORMAT_VERSION = 1


class JobError(ValueError):
    """The output folder cannot take this run (an earlier job's output, or a different job to resume)."""


@dataclass(frozen=True)
class JobSpec:
    listing: str
    listing_sha256: str
    rows: int
    shard_size: int
    models: dict[str, dict[str, Any]]
    """slug -> ``{"version": N, "sha256": ...}``."""
    threshold: float
    format_version: int = FORMAT_VERSION

    def shard_rows(self, index: int) -> int:
        return min(self.shard_size, self.rows - index * self.shard_size)

    @property
    def shard_count(self) -> int:
        return -(-self.rows // self.shard_size)

    def differences(self, other: JobSpec) -> list[str]:
        """Fields that differ, the listing's path excepted (the same file may be reached another way)."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{k}: {theirs[k]!r} then, {mine[k]!r} now" for k in mine if k != "listing" and mine[k] != theirs[k]]


def read_job(out: Path) -> JobSpec | None:
    path = out / JOB_FILE
    if not path.is_file():
        return None
    try:
        return JobSpec(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as error:
        raise JobError(f"{path}: not a backfill job file ({error})") from None


def write_job(out: Path, spec: JobSpec) -> None:
    with atomic(out / JOB_FILE) as temporary:
        temporary.write_text(json.dumps(asdict(spec), indent=2) + "\n", encoding="utf-8")


def prepare(out: Path, spec: JobSpec, resume: bool) -> dict[int, int]:
    """Check ``out`` against this job and record it there; returns the shards already finished (index ->
    rows), which a resumed run skips."""
    earlier = read_job(out)
    finished = finished_shards(out)
    if not resume and (earlier is not None or finished):
        raise JobError(f"{out} holds the output of an earlier backfill; pass --resume to continue it, "
                       "or choose another folder")
    if earlier is not None and (differences := spec.differences(earlier)):
        raise JobError(f"{out} holds a different backfill, which --resume cannot continue: " + "; ".join(differences))
    if earlier is None and finished:
        raise JobError(f"{out} has shards but no {JOB_FILE}: not a backfill this tool can continue")
    wrong = {k: n for k, n in finished.items() if k >= spec.shard_count or n != spec.shard_rows(k)}
    if wrong:
        raise JobError(f"{out}: shard(s) {sorted(wrong)} do not fit this job (index or row count); remove them")
    if earlier is None:
        write_job(out, spec)
    return finished
