"""The service against its peers on the same model file, the same preprocessing (bit-identical) and the
same JPEG upload, in interleaved rounds on one machine:

    .venv/bin/python benchmarks/bench_peers.py --repository models/demo --category men_tshirts
    .venv/bin/python benchmarks/bench_peers.py --backbone convnext-tiny --model-size 224

Servers: the service as shipped (``python -m service``, its defaults) with bare-body and multipart uploads;
plain FastAPI + uvicorn (``benchmarks/peers/fastapi_peer.py``); LitServe with batching on and off
(``benchmarks/peers/litserve_peer.py``, multipart uploads, the ``bench`` extra). Peers run ONNX Runtime at
the service's whole-budget intra-op thread count and its defaults otherwise; plain FastAPI also runs with
one intra-op thread (its request threads then call the model side by side, as the service's batches do).

The reference, "the model's own limit", is the best ONNX Runtime configuration a small search finds
(``benchmarks/peers/reference.py``): throughput of in-process preprocessing + inference, and the latency of
one image alone. Each round measures the reference's throughput, then every server in turn (the others
paused with SIGSTOP) at concurrency 16 and at concurrency 1, alternating one in-process image (the server
frozen meanwhile: a peer whose ONNX Runtime threads spin on after a request would otherwise slow the
reference and come out faster than the model) with one request. Reported per server: images/s at 16 as a
share of the reference (median of the rounds' ratios), the added p50 latency at concurrency 1 (median of
the pairwise differences), its CPU per image, and its CPU while idle after the load. It is a measuring
script, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_service import (  # noqa: E402
    benchmark_repository,
    in_process_throughput,
    load,
    make_jpegs,
    multipart_request,
    paired_latency_ms,
    raw_request,
)
from benchmarks.peers.reference import search  # noqa: E402
from benchmarks.peers.servers import ServerProcess, start_servers  # noqa: E402
from benchmarks.report import machine  # noqa: E402

CONCURRENCY = 16


@dataclass
class Contender:
    label: str
    server: str
    encode: Callable[[bytes, str], bytes]
    rate_ratios: list[float] = field(default_factory=list)
    added_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def contenders(servers: dict[str, ServerProcess], variants: dict[str, dict[str, str]]) -> list[Contender]:
    every = [Contender("this service, bare body", "service", raw_request),
             Contender("this service, multipart", "service", multipart_request),
             *(Contender("this service, bare body, " + ", ".join(f"{k.upper()}={v}" for k, v in settings.items()),
                         name, raw_request) for name, settings in variants.items()),
             Contender("plain FastAPI + uvicorn, bare body", "fastapi", raw_request),
             Contender("plain FastAPI + uvicorn, 1 intra-op thread, bare body", "fastapi_one_thread", raw_request),
             Contender("LitServe, batching on (16), multipart", "litserve_batch", multipart_request),
             Contender("LitServe, batching off, multipart", "litserve", multipart_request)]
    return [c for c in every if c.server in servers]


def measure(contender: Contender, server: ServerProcess, requests: list[bytes], reference_rate: float,
            latency_model: object, jpegs: list[bytes], args: argparse.Namespace) -> None:
    server.resume()
    try:
        result = asyncio.run(load(server, requests, CONCURRENCY, args.duration))  # type: ignore[arg-type]
        local, served = paired_latency_ms(latency_model, server.port, jpegs, requests, args.pairs,  # type: ignore[arg-type]
                                          lambda on: server.pause() if on else server.resume())
    finally:
        server.pause()
    contender.rate_ratios.append(result.rate / reference_rate)
    contender.cpu_ms.append(result.cpu_ms_per_image)
    contender.added_ms.append(statistics.median(s - x for s, x in zip(served, local, strict=True)) * 1e3)


def idle_cpu_percent(servers: dict[str, ServerProcess], seconds: float) -> dict[str, float]:
    for server in servers.values():
        server.resume()
    before = {name: server.cpu_seconds() for name, server in servers.items()}
    time.sleep(seconds)
    return {name: (server.cpu_seconds() - before[name]) / seconds * 100 for name, server in servers.items()}


def report(rows: list[Contender], idle: dict[str, float], reference: str) -> list[str]:
    lines = [f"Reference: {reference}.", "",
             f"| server | img/s at {CONCURRENCY} / raw limit | added p50 at concurrency 1 | CPU ms / image "
             "| idle CPU, % of a core |", "| --- | ---: | ---: | ---: | ---: |"]
    for c in rows:
        lines.append(f"| {c.label} | {statistics.median(c.rate_ratios):.2f} | {statistics.median(c.added_ms):+.1f} ms "
                     f"| {statistics.median(c.cpu_ms):.1f} | {idle[c.server]:.2f} |")
    ours = [c for c in rows if c.server == "service"]
    peers = [c for c in rows if not c.server.startswith("service")]
    if peers:
        best_peer_ms = min(statistics.median(c.added_ms) for c in peers)
        our_ms = statistics.median(ours[0].added_ms)
        best_ratio = max(statistics.median(c.rate_ratios) for c in peers)
        our_ratio = max(statistics.median(c.rate_ratios) for c in ours)
        lines += ["", f"Goals: concurrency 1, added {our_ms:+.1f} ms against the best peer's {best_peer_ms:+.1f} "
                      f"+ 1 ms: {'met' if our_ms <= best_peer_ms + 1 else 'NOT met'}; saturation {our_ratio:.2f} "
                      f"against the best peer's {best_ratio:.2f}: {'met' if our_ratio > best_ratio else 'NOT met'}; "
                      f"idle {idle['service']:.2f} % of a core (< 1 %): {'met' if idle['service'] < 1 else 'NOT met'}."]
    lines.append("Rounds: " + "; ".join(
        f"{c.label}: " + ", ".join(f"{r:.2f}/{a:+.1f}" for r, a in zip(c.rate_ratios, c.added_ms, strict=True))
        for c in rows) + " (ratio/added ms)")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="model repository (default: one built by this script)")
    parser.add_argument("--category", help="category slug (default: the first in the repository)")
    parser.add_argument("--backbone", help="build a random-init repository with this backbone (export extra)")
    parser.add_argument("--model-size", type=int, default=224, help="input size of the --backbone model")
    parser.add_argument("--precision", default="int8", help="precision of the --backbone export")
    parser.add_argument("--conv-channels", type=int, nargs="*", default=[32, 64, 128, 256],
                        help="widths of the synthetic model without --repository or --backbone")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measured load at concurrency 16")
    parser.add_argument("--pairs", type=int, default=20, help="alternated requests at concurrency 1, per round")
    parser.add_argument("--search-seconds", type=float, default=1.0, help="seconds per cell of the search")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--no-litserve", action="store_true", help="leave LitServe out (without the bench extra)")
    parser.add_argument("--compare-spinning", action="store_true",
                        help="also run the service with SPIN_WHEN_IDLE=false, side by side")
    parser.add_argument("--variant", action="append", default=[], metavar="SETTING=VALUE[,SETTING=VALUE]",
                        help="also run the service with these settings, side by side (repeatable)")
    return parser.parse_args()


def service_variants(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """Server name -> settings of each service variant the command line asks for."""
    variants = {"service_sleeping": {"spin_when_idle": "false"}} if args.compare_spinning else {}
    for index, text in enumerate(args.variant):
        pairs = [item.split("=", 1) for item in text.split(",")]
        if any(len(pair) != 2 for pair in pairs):
            raise SystemExit(f"--variant {text!r}: expected SETTING=VALUE[,SETTING=VALUE]")
        variants[f"service_variant_{index}"] = {key.strip().lower(): value.strip() for key, value in pairs}
    return variants


def main() -> None:
    args = parse_args()
    repository, slug, temporary = benchmark_repository(args)
    cores = os.cpu_count() or 1
    threads = min(cores, 8)  # the service's default intra-op threads, given to the peers too
    jpegs = make_jpegs(16, (800, 1000))
    print(f"Machine: {machine()}.\nModel {repository}/{slug}; uploads 800x1000 JPEG "
          f"(~{sum(map(len, jpegs)) // len(jpegs) // 1024} KiB).", flush=True)

    found, models = search(repository, slug, jpegs, sorted({1, threads}), [1, 4, 8], args.search_seconds, cores)
    print("\n".join(found.lines()), flush=True)
    fastest, batch = found.fastest
    litserve = not args.no_litserve and importlib.util.find_spec("litserve") is not None
    variants = service_variants(args)
    servers = start_servers(repository, slug, threads, litserve=litserve, variants=variants)
    rows = contenders(servers, variants)
    try:
        for server in servers.values():
            server.pause()
        per_round = max(32, int(found.throughput[fastest, batch] * args.duration))
        references = []
        for round_index in range(args.rounds):
            reference_rate = in_process_throughput(models[fastest], jpegs, batch, per_round, cores,
                                                   fastest.calls)[0]
            references.append(reference_rate)
            shift = round_index % len(rows)  # a different server goes first each round
            for contender in rows[shift:] + rows[:shift]:
                requests = [contender.encode(data, slug) for data in jpegs]
                measure(contender, servers[contender.server], requests, reference_rate, models[found.quickest],
                        jpegs, args)
            print(f"round {round_index + 1}: raw limit {reference_rate:.1f} img/s", flush=True)
        idle = idle_cpu_percent(servers, args.idle_seconds)
    finally:
        for server in servers.values():
            server.stop()
    reference = (f"throughput {statistics.median(references):.1f} img/s ({fastest}, batch {batch}; median of "
                 f"the rounds), latency {found.latency_ms[found.quickest]:.1f} ms ({found.quickest})")
    print("\n" + "\n".join(report(rows, idle, reference)))
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
