"""Run a model repository over a whole catalog listing on Ray Data, resumably.

    python -m backfill --repository MODELS_DIR --input LISTING --out OUT_DIR [--address RAY_ADDRESS] [--resume]
        [--format parquet|csv]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from backfill.job import JobError
from backfill.listing import ListingError
from backfill.models import parse_pins
from backfill.pipeline import PipelineOptions
from backfill.run import DEFAULT_SHARD_SIZE, BackfillConfig, run_backfill
from catalog.manifest import ManifestError
from catalog.taxonomy import TaxonomyError


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backfill", description=__doc__.splitlines()[0])
    p.add_argument("--repository", required=True, type=Path, help="model repository (what the service serves)")
    p.add_argument("--input", required=True, type=Path,
                   help="CSV or Parquet with id, category, image (path or URI); or the challenge's test.csv "
                        "(or its folder) beside test_images/")
    p.add_argument("--out", required=True, type=Path, help="output folder: shards/, backfill.json, submission.csv")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--resume", action="store_true", help="continue the job in --out, skipping finished shards")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                   help="csv also writes the challenge's submission.csv (the Parquet shards are always written)")
    p.add_argument("--shard-size", type=positive, default=DEFAULT_SHARD_SIZE, help="listing rows per output shard")
    p.add_argument("--threshold", type=float, help="abstain below this confidence (default: the service's)")
    p.add_argument("--version", action="append", default=[], metavar="SLUG=N",
                   help="pin a model version (default: each category's newest); repeatable")
    p.add_argument("--batch-size", type=positive, default=32, help="images per model call")
    p.add_argument("--actors", type=int, help="inference actors (default: one per GPU, else one per 2 CPUs)")
    p.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs reserved per actor (its session's threads)")
    p.add_argument("--session-threads", type=positive,
                   help="intra-op threads of each actor's sessions (default: its CPUs, rounded up)")
    p.add_argument("--gpus-per-actor", type=float, help="default: 1 where the cluster has GPUs, else 0")
    p.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs reserved per read-and-decode task")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all); ignored with --address")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from(args: argparse.Namespace) -> BackfillConfig:
    options = PipelineOptions(batch_size=args.batch_size, actors=args.actors, actor_cpus=args.actor_cpus,
                              gpus_per_actor=args.gpus_per_actor, decode_cpus=args.decode_cpus,
                              session_threads=args.session_threads)
    extra = {} if args.threshold is None else {"threshold": args.threshold}
    return BackfillConfig(repository=args.repository, listing=args.input, out=args.out, resume=args.resume,
                          output_format=args.format, shard_size=args.shard_size, pins=parse_pins(args.version),
                          pipeline=options, address=args.address, num_cpus=args.num_cpus,
                          progress=not args.no_progress, **extra)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print(f"error: --threshold must be from 0 to 1, got {args.threshold}", file=sys.stderr)
        return 2
    try:
        summary = run_backfill(config_from(args))
    except (ListingError, ManifestError, JobError, TaxonomyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: finished shards are kept in {args.out}; run again with --resume", file=sys.stderr)
        return 130
    print(summary.format())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
