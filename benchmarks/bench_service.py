"""Service benchmark: the model's own limit against the service's end-to-end numbers, in one run on
the same machine and model.

    .venv/bin/python benchmarks/bench_service.py --backbone convnext-tiny --model-size 224
    .venv/bin/python benchmarks/bench_service.py --repository models/demo --category men_tshirts

``--backbone`` exports a random-init model of that size through the real export path (weights do not
change the cost); ``--repository`` measures a repository as it is; with neither, a synthetic
four-convolution model from ``benchmarks/onnx_factory.py``. Measures:

(a) in-process preprocessing + ONNX Runtime at the best batch size (decoding pipelined in a thread pool, no HTTP);
(b) the service's throughput from JPEG uploads at saturation (``python -m service`` in a subprocess), as
    bare-body uploads and (b') as multipart forms;
(c) the same with batching off (max_batch_size 1);
(d) median latency at concurrency 1 against in-process preprocessing + inference of one image, alternated;
(e) the service's CPU use while idle;
plus p50/p95/p99 latency at concurrency 1, 4 and 16.

The load generator is a minimal keep-alive HTTP/1.1 client on raw asyncio streams with pre-encoded
request bodies, so it costs the shared CPU as little as possible (its share is reported). It is a
measuring script, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from catalog.manifest import load_manifest, resolve_version  # noqa: E402
from service.images import ImageLimits, preprocess_upload  # noqa: E402
from service.onnx_predictor import discover, session_options  # noqa: E402
from service.process_tree import children  # noqa: E402

LIMITS = ImageLimits(max_bytes=50_000_000, max_pixels=100_000_000)


def make_jpegs(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """Product-photo-like JPEGs: smooth colour fields with texture, at a typical upload size."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 255, size=(6, 5, 3)).astype(np.uint8)
        base = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
        noise = rng.normal(0, 12, size=(size[1], size[0], 3))
        pixels = np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


# -- (a) and (d) in-process ----------------------------------------------------------------------


@dataclass
class Model:
    session: ort.InferenceSession
    spec: object
    input_name: str
    outputs: list[str]

    @classmethod
    def load(cls, repository: Path, slug: str, threads: int) -> Model:
        folder = resolve_version(repository, slug)
        manifest = load_manifest(folder)
        session = ort.InferenceSession(str(folder / manifest.model_file), session_options(threads),
                                       providers=["CPUExecutionProvider"])
        return cls(session, manifest.preprocess_spec(), manifest.input.name, manifest.output_names)

    def run(self, batch: list[np.ndarray]) -> None:
        self.session.run(self.outputs, {self.input_name: np.stack(batch)})


def in_process_throughput(model: Model, jpegs: list[bytes], batch_size: int, images: int,
                          threads: int, parallel_calls: int = 1) -> tuple[float, float]:
    """Images/s with decoding in a thread pool feeding model calls of ``batch_size`` (pipelined; up to
    ``parallel_calls`` of them at once, each from its own thread), and this process's CPU milliseconds per
    image."""
    stream = [jpegs[i % len(jpegs)] for i in range(images)]
    cpu_before = own_cpu_s()
    with ThreadPoolExecutor(threads) as pool, ThreadPoolExecutor(parallel_calls) as callers:
        started = time.perf_counter()
        running: list[Future[object]] = []
        batch: list[np.ndarray] = []
        for pixels in pool.map(lambda data: preprocess_upload(data, model.spec, LIMITS), stream):  # type: ignore[arg-type]
            batch.append(pixels)
            if len(batch) == batch_size:
                if len(running) == parallel_calls:
                    running.pop(0).result()
                running.append(callers.submit(model.run, batch))
                batch = []
        if batch:
            running.append(callers.submit(model.run, batch))
        for call in running:
            call.result()
        rate = images / (time.perf_counter() - started)
    return rate, (own_cpu_s() - cpu_before) / images * 1e3


# -- the service ---------------------------------------------------------------------------------


def process_cpu_s(pid: int, thread: int | None = None) -> float:
    """CPU seconds of a process (all its threads), or of one of its threads."""
    path = Path(f"/proc/{pid}/stat") if thread is None else Path(f"/proc/{pid}/task/{thread}/stat")
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, repository: Path, slug: str, **settings: object) -> None:
        self.port = free_port()
        env = {**os.environ, **{f"CATALOG_SERVICE_{k.upper()}": str(v) for k, v in settings.items()},
               "CATALOG_SERVICE_CATEGORIES": slug}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--repository", str(repository), "--port", str(self.port),
             "--log-level", "warning"], cwd=ROOT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited with {self.process.returncode}")
            try:
                status, _ = asyncio.run(self._get("/v2/health/ready"))
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("server did not become ready")

    async def _get(self, path: str) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status, body = await read_response(reader)
        writer.close()
        return status, body

    def pids(self) -> list[int]:
        """The server and its child processes (``WORKERS``' workers, an inference process)."""
        return [self.process.pid, *children(self.process.pid)]

    def per_process_cpu_s(self, main_thread: bool = False) -> dict[int, float]:
        """By pid: the process's CPU seconds, or its main thread's (the event loop's, in a worker)."""
        found = {}
        for pid in self.pids():
            with contextlib.suppress(OSError):  # exited meanwhile
                found[pid] = process_cpu_s(pid, pid if main_thread else None)
        return found

    def cpu_seconds(self) -> float:
        """CPU seconds of the server and its child processes."""
        return sum(self.per_process_cpu_s().values())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def multipart_request(data: bytes, category: str) -> bytes:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"category\"\r\n\r\n{category}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def batch_request(images: list[bytes], category: str) -> bytes:
    """One ``/batch`` upload of several images (a backfill client's request)."""
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"categories\"\r\n\r\n{category}\r\n".encode()]
    for i, data in enumerate(images):
        parts.append((f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{i}.jpg\"\r\n"
                      f"Content-Type: image/jpeg\r\n\r\n").encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (f"POST /batch HTTP/1.1\r\nHost: bench\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def raw_request(data: bytes, category: str) -> bytes:
    """The bare-body upload: the JPEG is the request body, the category a query parameter."""
    head = (f"POST /predict?category={category} HTTP/1.1\r\nHost: bench\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    return head + data


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
    return status, await reader.readexactly(length)


@dataclass
class LoadResult:
    rate: float
    """Images/s over the measured window."""
    latencies: list[float]
    """Seconds, of the requests sent in the measured window."""
    cpu_ms_per_image: float
    """The server's CPU (all its threads) per image over the whole run, warm-up included."""


async def load(server: Server, requests: list[bytes], concurrency: int, duration_s: float,
               warmup_s: float = 1.0, images_per_request: int = 1) -> LoadResult:
    """Closed loop: ``concurrency`` keep-alive connections sending back to back."""
    latencies: list[float] = []
    completed = everything = 0
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    cpu_before = server.cpu_seconds()

    async def worker(offset: int) -> None:
        nonlocal completed, everything
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        i = offset
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                break
            writer.write(requests[i % len(requests)])
            status, body = await read_response(reader)
            done = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"status {status}: {body[:200]!r}")
            everything += 1
            if sent >= measure_from:
                latencies.append(done - sent)
                completed += 1
            i += concurrency
        writer.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    cpu_ms = (server.cpu_seconds() - cpu_before) / max(everything * images_per_request, 1) * 1e3
    return LoadResult(completed * images_per_request / duration_s, latencies, cpu_ms)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1e3


def paired_latency_ms(model: Model, port: int, jpegs: list[bytes], requests: list[bytes], pairs: int,
                      quiet: Callable[[bool], None] = lambda on: None) -> tuple[list[float], list[float]]:
    """(d): one in-process preprocessing + inference, then one service request of the same image, alternated
    ``pairs`` times, so both see the same machine from moment to moment (this VM's speed drifts by
    +-15 % between seconds, more than the difference measured). ``quiet(True)`` before each in-process run
    and ``quiet(False)`` after it can freeze the server meanwhile (a server whose threads spin on after a
    request would otherwise slow the reference)."""

    async def run() -> tuple[list[float], list[float]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        local, served = [], []
        for i in range(pairs):
            quiet(True)
            started = time.perf_counter()
            model.run([preprocess_upload(jpegs[i % len(jpegs)], model.spec, LIMITS)])  # type: ignore[arg-type]
            local.append(time.perf_counter() - started)
            quiet(False)
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            status, body = await read_response(reader)
            served.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"status {status}: {body[:200]!r}")
        writer.close()
        return local, served

    return asyncio.run(run())


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def benchmark_repository(args: argparse.Namespace) -> tuple[Path, str, tempfile.TemporaryDirectory[str] | None]:
    """``(repository, slug, temporary)``: ``--repository`` as given, or one built into a temporary folder
    (the caller cleans it up) from ``--backbone`` or the synthetic model's options; the slug is
    ``--category`` or the repository's first."""
    temporary = None
    repository = args.repository
    if repository is None:
        temporary = tempfile.TemporaryDirectory()
        repository = Path(temporary.name)
        build_repository(args, repository)
    return repository, args.category or discover(repository)[0], temporary


def build_repository(args: argparse.Namespace, folder: Path) -> None:
    if args.backbone:
        from benchmarks.random_repository import build_random_repository

        print(f"exporting a random-init {args.backbone} at {args.model_size} px ({args.precision}) ...", flush=True)
        build_random_repository(folder, backbone=args.backbone, image_size=args.model_size,
                                precision=args.precision)
    else:
        from benchmarks.onnx_factory import write_version

        write_version(folder, "men_tshirts", size=224, conv_channels=tuple(args.conv_channels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="model repository (default: one built by this script)")
    parser.add_argument("--category", help="category slug (default: the first in the repository)")
    parser.add_argument("--backbone", help="build a random-init repository with this backbone, e.g. convnext-tiny "
                        "(needs the export extra); without it and --repository, a synthetic four-convolution model")
    parser.add_argument("--model-size", type=int, default=224, help="input size of the --backbone model")
    parser.add_argument("--precision", default="int8", help="precision of the --backbone export")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured load phase")
    parser.add_argument("--max-batch-size", type=int, default=16, help="largest batch size tried in (a)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating rounds of (a), (b) and (c); medians and bests are reported")
    parser.add_argument("--pairs", type=int, default=60, help="alternated single requests for (d)")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="how long (e) watches the idle service")
    parser.add_argument("--conv-channels", type=int, nargs="*", default=[32, 64, 128, 256],
                        help="widths of the synthetic model's convolutions (more = slower model)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(800, 1000), metavar=("W", "H"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a service setting for (b) and (d), e.g. --set session_threads=1 (repeatable)")
    args = parser.parse_args()

    repository, slug, temporary = benchmark_repository(args)
    cores = os.cpu_count() or 1
    threads = min(cores, 8)
    jpegs = make_jpegs(16, tuple(args.image_size))
    print(f"model {repository}/{slug}; {cores} CPU cores; uploads {args.image_size[0]}x{args.image_size[1]} JPEG "
          f"(~{sum(map(len, jpegs)) // len(jpegs) // 1024} KiB)", flush=True)

    model = Model.load(repository, slug, threads)
    in_process_throughput(model, jpegs, 4, 16, threads)  # warm-up
    # Two interleaved sweeps, best of each: one sweep on this VM can crown a batch size by a drift.
    per_batch: dict[int, float] = {}
    sizes = [b for b in (1, 2, 4, 8, 16, 32) if b <= args.max_batch_size]
    for _ in range(2):
        for batch_size in sizes:
            rate = in_process_throughput(model, jpegs, batch_size, max(48, 4 * batch_size), threads)[0]
            per_batch[batch_size] = max(rate, per_batch.get(batch_size, 0.0))
    best_batch = max(per_batch.items(), key=lambda kv: kv[1])[0]
    print("in-process images/s by batch size: " + ", ".join(f"{b}: {v:.1f}" for b, v in per_batch.items()))
    per_round = max(32, int(per_batch[best_batch] * args.duration))

    raw = [raw_request(data, slug) for data in jpegs]
    multipart = [multipart_request(data, slug) for data in jpegs]
    batch_images = 16
    batches = [batch_request([jpegs[(i + k) % len(jpegs)] for k in range(batch_images)], slug) for i in range(4)]
    settings = dict(kv.split("=", 1) for kv in args.set)
    # The service runs at the batch size (a) found best: what an operator would configure.
    server = Server(repository, slug, max_batch_size=best_batch, **settings)
    unbatched_server = Server(repository, slug, max_batch_size=1, **settings)
    saturation = 32
    runs: dict[str, list[float]] = {"a": [], "b": [], "b_multipart": [], "b_batch": [], "c": []}
    cpu: dict[str, list[float]] = {"a": [], "b": []}
    client_share: list[float] = []
    try:
        before = server.cpu_seconds()
        time.sleep(args.idle_seconds)
        idle_pct = (server.cpu_seconds() - before) / args.idle_seconds * 100
        # This VM's speed drifts between seconds, so the measures alternate in short rounds and the
        # ratios are taken of medians (and of bests) over the same rounds.
        for _ in tqdm(range(args.rounds), desc="rounds of (a), (b), (c)", unit="round"):
            rate, cpu_ms = in_process_throughput(model, jpegs, best_batch, per_round, threads)
            runs["a"].append(rate)
            cpu["a"].append(cpu_ms)
            cpu_before = own_cpu_s()
            result = asyncio.run(load(server, raw, saturation, args.duration))
            client_share.append((own_cpu_s() - cpu_before) / (args.duration + 1.0) / cores)
            runs["b"].append(result.rate)
            cpu["b"].append(result.cpu_ms_per_image)
            runs["b_multipart"].append(asyncio.run(load(server, multipart, saturation, args.duration)).rate)
            runs["b_batch"].append(asyncio.run(load(server, batches, saturation // batch_images, args.duration,
                                                    images_per_request=batch_images)).rate)
            runs["c"].append(asyncio.run(load(unbatched_server, raw, saturation, args.duration)).rate)
        local, served = paired_latency_ms(model, server.port, jpegs, raw, args.pairs)
        at = {c: asyncio.run(load(server, raw, c, args.duration)) for c in (1, 4, 16)}
    finally:
        server.stop()
        unbatched_server.stop()
    print("runs, images/s: " + "; ".join(f"({k}) " + ", ".join(f"{v:.1f}" for v in vs) for k, vs in runs.items()))

    med = {k: statistics.median(v) for k, v in runs.items()}
    best = {k: max(v) for k, v in runs.items()}
    local_ms, served_ms = statistics.median(local) * 1e3, statistics.median(served) * 1e3
    added_ms = statistics.median(s - x for s, x in zip(served, local, strict=True)) * 1e3
    latency = {c: result.latencies for c, result in at.items()}
    # Little's law: a closed loop of 16 waits 16 / throughput on average; the goal bounds the tail
    # against the throughput of that same run (the machine's speed drifts between runs).
    rate_16 = at[16].rate
    bound_16 = 1.1 * 16 / rate_16 * 1e3
    rows = [
        ("(a) in-process preprocessing + ORT, best batch size",
         f"{med['a']:.1f} images/s (batch {best_batch}; best {best['a']:.1f})", ""),
        ("(b) service, bare JPEG uploads at saturation",
         f"{med['b']:.1f} images/s (concurrency {saturation}; best {best['b']:.1f})",
         f"(b)/(a) = {med['b'] / med['a']:.2f} of medians, {best['b'] / best['a']:.2f} of bests (goal >= 0.95)"),
        ("(b') the same as multipart form uploads",
         f"{med['b_multipart']:.1f} images/s (best {best['b_multipart']:.1f})",
         f"(b')/(a) = {med['b_multipart'] / med['a']:.2f} of medians"),
        (f"(b'') the same as /batch uploads of {batch_images} images",
         f"{med['b_batch']:.1f} images/s (best {best['b_batch']:.1f})",
         f"(b'')/(a) = {med['b_batch'] / med['a']:.2f} of medians"),
        ("(c) service, batching off", f"{med['c']:.1f} images/s (best {best['c']:.1f})",
         f"(b)/(c) = {med['b'] / med['c']:.2f}"),
        ("(d) median latency, concurrency 1", f"{served_ms:.1f} ms vs {local_ms:.1f} ms in-process",
         f"{added_ms:+.1f} ms, median of {args.pairs} alternated pairs (goal <= +3 ms)"),
        ("(e) service CPU while idle", f"{idle_pct:.2f} % of a core", "goal < 1 %"),
        ("load generator's CPU during (b)", f"{statistics.median(client_share) * 100:.1f} % of the machine",
         "taken from the cores the service uses"),
        ("CPU per image, (a) in-process vs (b) the service",
         f"{statistics.median(cpu['a']):.1f} ms vs {statistics.median(cpu['b']):.1f} ms",
         f"the service's own cost: {statistics.median(cpu['b']) - statistics.median(cpu['a']):+.1f} ms of CPU "
         "per image (medians)"),
    ]
    for c in (1, 4, 16):
        values = latency[c]
        note = (f"{at[c].rate:.1f} images/s; p99 goal <= 1.1 x 16 / {rate_16:.1f} = {bound_16:.0f} ms" if c == 16
                else f"{at[c].rate:.1f} images/s")
        rows.append((f"latency at concurrency {c}",
                     f"p50 {pct(values, 50):.1f} / p95 {pct(values, 95):.1f} / p99 {pct(values, 99):.1f} ms",
                     note))
    print()
    print("| measure | result | against the goal |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
