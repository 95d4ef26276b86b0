"""One backfill, from listing to output: check the listing and the models, check the output folder
against the job (resume), run the pending shards on Ray, write the CSV if asked, and sum it all up."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from backfill.decode import service_default
from backfill.job import JobSpec, prepare
from backfill.listing import Listing, ListingError, read_listing
from backfill.models import ModelBundle, load_models
from backfill.pipeline import PipelineOptions, build_dataset, plan, stream_shards
from backfill.shards import shard_folder, write_shard
from backfill.submission import write_submission_csv
from backfill.summary import RunStats, Summary, output_errors

DEFAULT_SHARD_SIZE = 1000


@dataclass(frozen=True)
class BackfillConfig:
    repository: Path
    listing: Path
    out: Path
    resume: bool = False
    output_format: Literal["parquet", "csv"] = "parquet"
    shard_size: int = DEFAULT_SHARD_SIZE
    threshold: float = field(default_factory=lambda: float(service_default("threshold")))
    pins: dict[str, int] = field(default_factory=dict)
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    address: str | None = None
    """A Ray cluster to join (else ``RAY_ADDRESS``, else a local Ray on this machine)."""
    num_cpus: int | None = None
    """CPUs of the local Ray (default: all of this machine's); ignored when joining a cluster."""
    progress: bool = True


def connect(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start Ray here; reuse one already up."""
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False)


def job_spec(config: BackfillConfig, listing: Listing, bundles: dict[str, ModelBundle]) -> JobSpec:
    return JobSpec(listing=listing.source, listing_sha256=listing.sha256, rows=listing.rows,
                   shard_size=config.shard_size, threshold=config.threshold,
                   models={slug: {"version": b.version, "sha256": b.manifest.sha256} for slug, b in bundles.items()})


def run_backfill(config: BackfillConfig) -> Summary:
    """Everything but argument parsing; raises ListingError, ManifestError or JobError before any work."""
    if config.shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {config.shard_size}")
    listing = read_listing(config.listing)
    if config.output_format == "csv" and not pc.all(pc.utf8_is_digit(listing.table.column("id"))).as_py():
        raise ListingError(f"{listing.source}: --format csv writes the challenge's format, whose ids are integers")
    bundles = load_models(config.repository, pc.unique(listing.table.column("slug")).to_pylist(), config.pins)
    spec = job_spec(config, listing, bundles)
    finished = prepare(config.out, spec, config.resume)
    pending = [k for k in range(spec.shard_count) if k not in finished]
    stats, actors = RunStats(), 0
    if pending:
        connect(config.address, config.num_cpus)  # before the clock: Ray's start-up is not throughput
    started = time.perf_counter()
    if pending:
        actors = _run_pending(config, listing, bundles, spec, pending, stats, sum(finished.values()), started)
    wall_s = time.perf_counter() - started
    outputs = [str(shard_folder(config.out))]
    if config.output_format == "csv":
        outputs.append(str(write_submission_csv(config.out, spec.shard_count)))
    return Summary(stats=stats, wall_s=wall_s, actors=actors, total_rows=spec.rows,
                   skipped_rows=sum(finished.values()), all_errors=output_errors(config.out, range(spec.shard_count)),
                   outputs=tuple(outputs))


def _run_pending(config: BackfillConfig, listing: Listing, bundles: dict[str, ModelBundle], spec: JobSpec,
                 pending: list[int], stats: RunStats, done_rows: int, started: float) -> int:
    """Run the pending shards on Ray, writing each as it completes; returns the number of actors used."""
    import ray
    from tqdm import tqdm

    placement = plan(config.pipeline, ray.cluster_resources())
    dataset = build_dataset(listing, pending, config.shard_size, bundles, config.threshold, config.pipeline, placement)
    with tqdm(total=spec.rows, initial=done_rows, unit="img", disable=not config.progress, smoothing=0.1) as bar:
        def on_shard(index: int, table: pa.Table) -> None:
            write_shard(config.out, index, table)
            stats.add_shard(table)

        def on_rows(count: int) -> None:
            stats.rows_back(count, time.perf_counter() - started)
            bar.update(count)

        stream_shards(dataset, {k: spec.shard_rows(k) for k in pending}, on_shard, on_rows)
    return placement.actors
