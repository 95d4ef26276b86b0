"""The front end's capacity: images/s of 800x1000 JPEG uploads to a near-free model (global pooling and one
linear layer per attribute, so nearly all the CPU is the HTTP front end and the JPEG decode), or to a real
repository's model, for each multi-process design, in one run on one machine: ``1`` (one process), ``N``
(``WORKERS=N``: independent processes, each with its own sessions) and ``N-shared`` (``WORKERS=N`` with
``SHARED_INFERENCE``: N front ends and one inference process).

    .venv/bin/python benchmarks/bench_workers.py [--workers 1 2 2-shared] [--duration 5] [--rounds 3]
        [--repository models/demo --category men_tshirts]

Every server runs side by side for the whole run and the rounds interleave them (this VM's speed drifts
between seconds), each at saturation: ``--concurrency`` keep-alive connections from the minimal asyncio
client of ``bench_service.py``, which shares the machine, so its CPU is reported too. Also reported: the
service's CPU per image (the parent and every worker), each worker's share of it (how evenly the kernel
spreads connections), the CPU one decode costs in-process (what a front end that decodes for a separate
inference process would still spend per image) and, with shared inference, the images per model call the
inference process ran (the front ends' batches joined) against the front ends' own batches. A measuring
script, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_service import (  # noqa: E402
    LIMITS,
    Server,
    load,
    make_jpegs,
    own_cpu_s,
    raw_request,
    read_response,
)
from benchmarks.onnx_factory import write_version  # noqa: E402
from catalog.manifest import load_manifest, resolve_version  # noqa: E402
from service.images import preprocess_upload  # noqa: E402

SLUG = "men_tshirts"
TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used (all cores, ``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICKS  # less idle and I/O wait


@dataclass
class Rounds:
    rate: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    client_cores: list[float] = field(default_factory=list)
    busiest_share: list[float] = field(default_factory=list)
    """The busiest process's share of the service's CPU in the round (0.5 is an even split of 2 workers)."""
    service_cores: list[float] = field(default_factory=list)
    others_cores: list[float] = field(default_factory=list)
    """CPU of everything else on the machine (other users of these cores) during the round."""
    loop_ms: list[float] = field(default_factory=list)
    """CPU per image of the workers' main threads, which run the event loop: the part of a worker's work
    that cannot spread over more cores (preprocessing and inference run in pools, mostly without the GIL)."""


def decode_cpu_ms(jpegs: list[bytes], repository: Path, slug: str, repeats: int = 3) -> float:
    """CPU milliseconds of one upload's preprocessing (decode, resize, normalise), in this process."""
    spec = load_manifest(resolve_version(repository, slug)).preprocess_spec()
    before = own_cpu_s()
    for _ in range(repeats):
        for data in jpegs:
            preprocess_upload(data, spec, LIMITS)
    return (own_cpu_s() - before) / (repeats * len(jpegs)) * 1e3


def design_settings(design: str) -> dict[str, object]:
    """``1``, ``N`` or ``N-shared`` as service settings."""
    workers, _, shared = design.partition("-")
    if shared not in ("", "shared") or not workers.isdigit():
        raise SystemExit(f"unknown design {design!r}: use N (independent workers) or N-shared")
    return {"workers": int(workers), **({"shared_inference": "true"} if shared else {})}


def mean_batch_sizes(server: Server) -> tuple[float, float]:
    """Mean images per batch since start-up: the front ends' batches, and the inference process's model calls
    (0 without one), from ``/metrics``."""

    async def get() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        _, body = await read_response(reader)
        writer.close()
        return body.decode()

    values: dict[str, float] = {}
    for line in asyncio.run(get()).splitlines():
        for name in ("catalog_batch_size_sum", "catalog_batch_size_count", "catalog_inference_batch_size_sum",
                     "catalog_inference_batch_size_count"):
            if line.startswith(name + "{"):
                values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])

    def mean(prefix: str) -> float:
        return values.get(prefix + "_sum", 0.0) / max(values.get(prefix + "_count", 0.0), 1.0)

    return mean("catalog_batch_size"), mean("catalog_inference_batch_size")


def measure_round(server: Server, requests: list[bytes], concurrency: int, duration_s: float,
                  into: Rounds) -> None:
    before, loop_before = server.per_process_cpu_s(), server.per_process_cpu_s(main_thread=True)
    client_before, machine_before, started = own_cpu_s(), machine_busy_s(), time.perf_counter()
    result = asyncio.run(load(server, requests, concurrency, duration_s))
    elapsed = time.perf_counter() - started
    client = own_cpu_s() - client_before
    after = server.per_process_cpu_s()
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    loop_after = server.per_process_cpu_s(main_thread=True)
    loop_s = sum(loop_after[p] - loop_before.get(p, 0.0) for p in loop_after)
    into.loop_ms.append(result.cpu_ms_per_image * loop_s / max(sum(used.values()), 1e-9))
    into.client_cores.append(client / elapsed)
    into.service_cores.append(sum(used.values()) / elapsed)
    into.others_cores.append((machine_busy_s() - machine_before - client - sum(used.values())) / elapsed)
    into.rate.append(result.rate)
    into.cpu_ms.append(result.cpu_ms_per_image)
    into.busiest_share.append(max(used.values()) / max(sum(used.values()), 1e-9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", nargs="+", default=["1", "2", "2-shared"],
                        help="designs to compare: N (WORKERS=N, independent) or N-shared (SHARED_INFERENCE)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured load phase")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections at saturation")
    parser.add_argument("--image-size", type=int, nargs=2, default=(800, 1000), metavar=("W", "H"))
    parser.add_argument("--repository", type=Path, help="serve this repository's --category instead of the "
                                                         "near-free model")
    parser.add_argument("--category", default=SLUG, help="with --repository: the model to load")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a service setting for every server, e.g. --set session_threads=1 (repeatable)")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    jpegs = make_jpegs(16, tuple(args.image_size))
    requests = [raw_request(data, args.category) for data in jpegs]
    settings = dict(kv.split("=", 1) for kv in args.set)
    with tempfile.TemporaryDirectory() as folder:
        repository = args.repository or Path(folder)
        if args.repository is None:
            write_version(repository, SLUG, size=224)  # no convolutions: pooling and the heads only
        decode_ms = decode_cpu_ms(jpegs, repository, args.category)
        print(f"{cores} CPU cores; {'near-free model' if args.repository is None else repository} "
              f"({args.category}); uploads {args.image_size[0]}x{args.image_size[1]} JPEG "
              f"(~{sum(map(len, jpegs)) // len(jpegs) // 1024} KiB); preprocessing one costs {decode_ms:.1f} ms "
              "of CPU in-process", flush=True)
        servers = {d: Server(repository, args.category, **design_settings(d), **settings) for d in args.workers}
        rounds = {d: Rounds() for d in args.workers}
        try:
            for server in servers.values():  # warm every worker's pools and caches
                asyncio.run(load(server, requests, args.concurrency, 1.0, warmup_s=0.5))
            for _ in tqdm(range(args.rounds), desc="rounds", unit="round"):
                for design, server in servers.items():
                    measure_round(server, requests, args.concurrency, args.duration, rounds[design])
                    time.sleep(0.5)
            batches = {d: mean_batch_sizes(server) for d, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
    report(rounds, batches, decode_ms, cores)


def report(rounds: dict[str, Rounds], batches: dict[str, tuple[float, float]], decode_ms: float, cores: int) -> None:
    print("runs, images/s: " + "; ".join(f"{d} " + ", ".join(f"{v:.1f}" for v in r.rate) for d, r in rounds.items()))
    print("busiest process's share of the service's CPU: " + "; ".join(
        f"{d} " + ", ".join(f"{v:.0%}" for v in r.busiest_share) for d, r in rounds.items() if d != "1"))
    base = next(iter(rounds))
    base_rate = statistics.median(rounds[base].rate)
    print()
    print(f"| design | images/s | vs {base} | service CPU per image | of it preprocessing | of it event loops "
          "(ceiling: images/s) | images per batch: front end / model call | busiest process's share of the "
          f"service's CPU | cores used (of {cores}): service / load generator / other processes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for design, r in rounds.items():
        rate, cpu_ms, loop_ms = statistics.median(r.rate), statistics.median(r.cpu_ms), statistics.median(r.loop_ms)
        front, call = batches[design]
        loops = int(design_settings(design)["workers"])  # type: ignore[call-overload]
        print(f"| {design} | {rate:.1f} | {rate / base_rate:.2f}x | {cpu_ms:.1f} ms | {decode_ms / cpu_ms:.0%} | "
              f"{loop_ms:.1f} ms ({loops * 1e3 / loop_ms:.0f}) | {front:.2f} / {call or front:.2f} | "
              f"{statistics.median(r.busiest_share):.0%} | {statistics.median(r.service_cores):.2f} / "
              f"{statistics.median(r.client_cores):.2f} / {statistics.median(r.others_cores):.2f} |")


if __name__ == "__main__":
    main()
