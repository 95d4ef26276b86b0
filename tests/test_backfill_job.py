"""``backfill/job.py``: an output folder takes one job; --resume continues that job and no other."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from backfill.job import JOB_FILE, JobError, JobSpec, prepare, read_job
from backfill.schema import STAGE_SCHEMA
from backfill.shards import write_shard

SPEC = JobSpec(listing="/data/listing.csv", listing_sha256="ab" * 32, rows=25, shard_size=10,
               models={"kurtis": {"version": 2, "sha256": "cd" * 32}}, threshold=0.5)


def shard(n: int) -> pa.Table:
    return pa.Table.from_pylist([{"id": str(i), "row": i, "shard": 0} for i in range(n)], schema=STAGE_SCHEMA)


def test_shard_arithmetic():
    assert SPEC.shard_count == 3 and [SPEC.shard_rows(k) for k in range(3)] == [10, 10, 5]


def test_a_fresh_folder_records_the_job_and_refuses_a_second_job_without_resume(tmp_path):
    assert prepare(tmp_path, SPEC, resume=False) == {}
    assert read_job(tmp_path) == SPEC
    with pytest.raises(JobError, match="pass --resume to continue it"):
        prepare(tmp_path, SPEC, resume=False)


def test_resume_returns_finished_shards_of_the_same_job(tmp_path):
    prepare(tmp_path, SPEC, resume=True)  # nothing to resume: starts from the beginning
    write_shard(tmp_path, 2, shard(5))
    moved = dataclasses.replace(SPEC, listing="/mnt/elsewhere/listing.csv")  # the same file, reached another way
    assert prepare(tmp_path, moved, resume=True) == {2: 5}


@pytest.mark.parametrize(("change", "named"), [
    ({"listing_sha256": "ef" * 32}, "listing_sha256"),
    ({"shard_size": 5}, "shard_size"),
    ({"threshold": 0.7}, "threshold: 0.5 then, 0.7 now"),
    ({"models": {"kurtis": {"version": 3, "sha256": "cd" * 32}}}, "models"),
])
def test_resume_refuses_a_different_job_naming_the_difference(tmp_path, change, named):
    prepare(tmp_path, SPEC, resume=False)
    with pytest.raises(JobError, match=f"different backfill.*{named}"):
        prepare(tmp_path, dataclasses.replace(SPEC, **change), resume=True)


def test_shards_that_do_not_fit_the_job_are_refused(tmp_path):
    prepare(tmp_path, SPEC, resume=False)
    write_shard(tmp_path, 1, shard(4))  # shard 1 has 10 rows in this job
    with pytest.raises(JobError, match=r"shard\(s\) \[1\] do not fit"):
        prepare(tmp_path, SPEC, resume=True)


def test_shards_without_a_job_file_or_a_broken_job_file_are_refused(tmp_path):
    write_shard(tmp_path, 0, shard(10))
    with pytest.raises(JobError, match=f"no {JOB_FILE}"):
        prepare(tmp_path, SPEC, resume=True)
    (tmp_path / JOB_FILE).write_text("{not json")
    with pytest.raises(JobError, match="not a backfill job file"):
        prepare(tmp_path, SPEC, resume=True)
