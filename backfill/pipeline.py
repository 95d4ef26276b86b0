"""The Ray Data pipeline: pending shards in, a read-and-decode task stage, an inference actor pool, and
the driver writing each shard the moment its last row comes back. Ray Data streams it: the object store
holds only the blocks in flight, and backpressure keeps decoding from running far ahead of inference."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import pyarrow as pa

from backfill.decode import DecodeConfig, decode_batch
from backfill.infer import InferenceActor
from backfill.listing import Listing
from backfill.models import ModelBundle
from backfill.shards import ShardAssembler

if TYPE_CHECKING:
    from ray.data import Dataset


BLOCK_BATCHES = 4
"""Decode batches per input block."""


@dataclass(frozen=True)
class PipelineOptions:
    """How the work is cut and placed; None picks from the cluster's resources (see :func:`plan`)."""

    batch_size: int = 32
    """Images per model call (and per inference actor call)."""
    decode_batch_size: int = 16
    """Images per read-and-decode task call."""
    actors: int | None = None
    actor_cpus: float = 1.0
    gpus_per_actor: float | None = None
    session_threads: int | None = None
    decode_cpus: float = 1.0


@dataclass(frozen=True)
class Plan:
    actors: int
    actor_cpus: float
    actor_gpus: float
    session_threads: int
    decode_cpus: float


def plan(options: PipelineOptions, resources: dict[str, float]) -> Plan:
    """One actor per GPU where there are GPUs; else one actor per two CPUs of the cluster (measured on the
    demo models: decoding a catalog photo costs about what the int8 model does, so half the cores decode),
    at least one. Each actor's session gets as many threads as the actor has CPUs."""
    gpus = resources.get("GPU", 0.0)
    actor_gpus = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    if options.actors is not None:
        actors = options.actors
    elif actor_gpus > 0:
        actors = max(1, int(gpus // actor_gpus))
    else:
        actors = max(1, int(resources.get("CPU", 1.0) // (2 * options.actor_cpus)))
    threads = options.session_threads or max(1, math.ceil(options.actor_cpus))
    return Plan(actors, options.actor_cpus, actor_gpus, threads, options.decode_cpus)


def build_dataset(listing: Listing, pending: list[int], shard_size: int, bundles: dict[str, ModelBundle],
                  threshold: float, options: PipelineOptions, placement: Plan) -> Dataset:
    """The lazy Ray Dataset of output rows (plus their internal columns) for the pending shards; one input
    block per shard, in shard order, so shards finish roughly in order."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver's own bar counts images; Ray's would interleave with it
    context.print_on_execution_start = False
    # Input blocks are a few decode batches each, not whole shards: a block is one decode task, and small
    # ones keep every decoder busy from the start and let inference begin after the first few images.
    block = max(1, BLOCK_BATCHES * options.decode_batch_size)
    blocks = [part for k in pending for part in listing.shard(k, shard_size).to_batches(max_chunksize=block)]
    dataset: Dataset = ray.data.from_arrow([pa.Table.from_batches([b]) for b in blocks])
    decode = DecodeConfig({slug: bundle.spec for slug, bundle in bundles.items()})
    # Each decode task reserves the preprocessing memory budget one image may use (so Ray never packs more
    # decoders on a node than its memory allows). The reservation also keeps Ray Data from fusing the
    # decode tasks into the inference actors: decoding scales on every CPU of the cluster, inference on
    # the actors (GPUs), each at its own width.
    dataset = dataset.map_batches(partial(decode_batch, config=decode), batch_format="pyarrow",
                                  batch_size=options.decode_batch_size, num_cpus=placement.decode_cpus,
                                  memory=decode.memory_bytes)
    return dataset.map_batches(
        InferenceActor, fn_constructor_kwargs={"bundles": bundles, "threshold": threshold,
                                               "threads": placement.session_threads},
        batch_format="pyarrow", batch_size=options.batch_size,
        compute=ray.data.ActorPoolStrategy(size=placement.actors),
        num_cpus=placement.actor_cpus, num_gpus=placement.actor_gpus,
    )


def stream_shards(dataset: Dataset, expected: dict[int, int], on_shard: Callable[[int, pa.Table], None],
                  on_rows: Callable[[int], None]) -> None:
    """Run the dataset, handing each shard to ``on_shard`` as soon as it is complete; raises if the
    pipeline ended with rows missing (never a silently short output)."""
    assembler = ShardAssembler(expected)
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        assert isinstance(batch, pa.Table)  # what batch_format="pyarrow" yields
        on_rows(batch.num_rows)
        for index, table in assembler.add(batch):
            on_shard(index, table)
    missing = {k: n for k, n in assembler.pending.items() if n}
    if missing:
        raise RuntimeError(f"the pipeline ended with rows missing from shard(s) {sorted(missing)[:10]}")
