"""Backfill benchmark: ``python -m backfill`` on a local Ray against the in-process limit of the same
models and against ``/batch`` uploads to a running ``python -m service``, in one run on one machine
(the machine is shared and noisy: compare the ratios, measured minutes apart, not the absolute rates).

    .venv/bin/python benchmarks/bench_backfill.py --repository models/demo --images 1000 [--images 10000]

For each ``--images`` size it renders a synthetic catalog (``model_training.synthetic``, both splits as one
listing) and measures:

(a) the in-process limit: the same reading, preprocessing (``service.images.preprocess_upload``), ONNX
    Runtime sessions (the service's options) and joint decoding in one process, per-category chunks of
    ``--batch-size`` on a pool of one thread per core (each session one intra-op thread);
(b) the backfill CLI in a subprocess (local Ray, ``--num-cpus`` = the cores): wall time with Ray's start,
    and the rate it reports from its first shard's start to its last (Ray up, models loaded);
(c) ``/batch`` uploads of 64 images of one category per request, two connections, to ``python -m service``.

It prints a Markdown table with the machine and the command. A measuring script, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backfill.decode import DecodeConfig  # noqa: E402
from backfill.infer import LoadedModel  # noqa: E402
from backfill.listing import read_listing  # noqa: E402
from backfill.models import load_models  # noqa: E402
from backfill.read import read_image  # noqa: E402
from benchmarks.bench_service import batch_request, read_response  # noqa: E402
from benchmarks.report import machine, service  # noqa: E402
from catalog.taxonomy import load_taxonomy  # noqa: E402
from model_training.synthetic.catalog_writer import build_catalog  # noqa: E402
from service.images import preprocess_upload  # noqa: E402


def make_listing(folder: Path, images: int) -> Path:
    """A synthetic catalog of ``images`` photos, train and test split together, as a backfill listing."""
    catalog = folder / "catalog"
    build_catalog(catalog, per_category=images // 5, test_fraction=0.2, seed=0, workers=os.cpu_count() or 1,
                  progress=False)
    listing = folder / "listing.csv"
    with listing.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "category", "image"])
        for split in ("train", "test"):
            for row in csv.DictReader((catalog / f"{split}.csv").open()):
                writer.writerow([f"{split}-{row['id']}", row["Category"],
                                 f"catalog/{split}_images/{int(row['id']):06d}.jpg"])
    return listing


def chunks_by_category(listing: Path, size: int) -> list[tuple[str, list[str]]]:
    """The listing's images as ``(slug, uris)`` chunks of at most ``size``, one category each."""
    table = read_listing(listing).table
    by_slug: dict[str, list[str]] = {}
    for slug, uri in zip(table.column("slug").to_pylist(), table.column("image").to_pylist(), strict=True):
        by_slug.setdefault(slug, []).append(uri)
    return [(slug, uris[i:i + size]) for slug, uris in by_slug.items() for i in range(0, len(uris), size)]


def in_process_limit(repository: Path, listing: Path, batch_size: int, threads: int) -> float:
    """(a) Images/s of read + preprocess + inference + decoding, chunks spread over a thread pool."""
    chunks = chunks_by_category(listing, batch_size)
    bundles = load_models(repository, {slug for slug, _ in chunks}, {})
    models = {slug: LoadedModel.open(b, 1, ["CPUExecutionProvider"]) for slug, b in bundles.items()}
    config = DecodeConfig({slug: b.spec for slug, b in bundles.items()})

    def run(chunk: tuple[str, list[str]]) -> int:
        slug, uris = chunk
        limits = config.limits()
        pixels = [preprocess_upload(read_image(u, config.max_bytes), config.specs[slug], limits).tobytes()
                  for u in uris]
        return len(models[slug].predict(pixels, 0.5))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, chunks[: threads * 2]))  # warm-up: first calls pay for lazy initialisation
        started = time.perf_counter()
        done = sum(pool.map(run, chunks))
    return done / (time.perf_counter() - started)


def backfill(repository: Path, listing: Path, out: Path, cpus: int, extra: list[str]) -> tuple[float, str]:
    """(b) The CLI in a subprocess: wall seconds including Ray's start, and the summary it printed."""
    command = [sys.executable, "-m", "backfill", "--repository", str(repository), "--input", str(listing),
               "--out", str(out), "--num-cpus", str(cpus), "--no-progress", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"backfill failed ({done.returncode}): {done.stderr[-3000:]}")
    return wall, done.stdout


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in {text!r}"
    return float(found.group(1))


async def batch_uploads(url: str, listing: Path, connections: int) -> float:
    """(c) Images/s of ``/batch`` requests of 64 images of one category, ``connections`` at a time."""
    taxonomy = load_taxonomy()
    requests = [(len(uris), batch_request([Path(u).read_bytes() for u in uris], taxonomy.category(slug).name))
                for slug, uris in chunks_by_category(listing, 64)]
    host, port = url.removeprefix("http://").split(":")
    queue = list(reversed(requests))

    async def worker() -> int:
        reader, writer = await asyncio.open_connection(host, int(port))
        images = 0
        while queue:
            count, request = queue.pop()
            writer.write(request)
            status, body = await read_response(reader)
            if status != 200:
                raise RuntimeError(f"/batch answered {status}: {body[:200]!r}")
            images += count
        writer.close()
        return images

    started = time.perf_counter()
    done = sum(await asyncio.gather(*(worker() for _ in range(connections))))
    return done / (time.perf_counter() - started)


def stage_seconds(summary: str) -> dict[str, float]:
    """Worker seconds per stage from the backfill's summary line ``worker time: read 1.0 s (..), ...``."""
    return {stage: float(seconds) for stage, seconds in re.findall(r"(read|decode|infer) ([\d.]+) s", summary)}


def measure(args: argparse.Namespace, images: int, folder: Path) -> dict[str, float]:
    """One listing size: the limit before and after the backfill (the better of the two: the machine is noisy), the
    backfill, then ``/batch``."""
    listing = make_listing(folder, images)
    compare = images <= args.compare_up_to
    limits = [in_process_limit(args.repository, listing, args.batch_size, args.cpus)] if compare else []
    wall, summary = backfill(args.repository, listing, folder / "out", args.cpus, args.backfill_arg)
    print(summary, file=sys.stderr)
    result = {"images": float(images), "wall": wall, "rate": number(r"then ([\d.]+) images/s", summary),
              "overall": number(r"s: ([\d.]+) images/s", summary), "startup": number(r"start-up ([\d.]+) s", summary),
              "actor": number(r"([\d.]+) images/s per busy actor", summary),
              **{f"{k}_s": v / images for k, v in stage_seconds(summary).items()}}
    if compare:
        limits.append(in_process_limit(args.repository, listing, args.batch_size, args.cpus))
        result["limit"] = max(limits)
        with service(args.repository, threads=0) as url:
            result["batch"] = asyncio.run(batch_uploads(url, listing, connections=2))
    return result


def ratio(numerator: float, denominator: float | None) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "-"


def rate(value: float | None) -> str:
    return f"{value:.0f} img/s" if value else "-"


def table(results: list[dict[str, float]], cpus: int) -> str:
    lines = ["| images | in-process limit | backfill, steady | backfill / limit | backfill start-up, then overall | "
             "CLI wall, Ray start included | `/batch` uploads | backfill / `/batch` | per busy actor | "
             "worker ms per image: read, decode, infer |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        stages = ", ".join(f"{1e3 * r.get(f'{stage}_s', 0.0):.2f}" for stage in ("read", "decode", "infer"))
        lines.append(f"| {r['images']:.0f} | {rate(r.get('limit'))} | {rate(r['rate'])} | "
                     f"{ratio(r['rate'], r.get('limit'))} | {r['startup']:.1f} s, {rate(r['overall'])} | "
                     f"{r['wall']:.0f} s | {rate(r.get('batch'))} | {ratio(r['rate'], r.get('batch'))} | "
                     f"{rate(r['actor'])} | {stages} |")
    last = results[-1]
    per_image = sum(last.get(f"{s}_s", 0.0) for s in ("read", "decode", "infer"))
    if per_image:
        lines += ["", f"On paper, from the last row: {1e3 * per_image:.2f} CPU ms per image over all stages, so one "
                      f"{cpus}-core machine's CPUs do at most {cpus / per_image:.0f} img/s and N such machines "
                      f"{cpus / per_image:.0f} x N; one inference actor does {last['actor']:.0f} img/s of its busy "
                      f"time, so N machines need about {cpus / per_image / last['actor']:.1f} x N actors, as long as "
                      "the driver (one process assembling shards) and the storage keep up."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "models" / "demo")
    parser.add_argument("--images", type=int, action="append", help="listing sizes (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compare-up-to", type=int, default=1000,
                        help="measure (a) and (c) only for listings up to this size (they take as long again)")
    parser.add_argument("--backfill-arg", action="append", default=[], help="passed to python -m backfill")
    args = parser.parse_args()
    results = []
    for images in args.images or [1000]:
        with tempfile.TemporaryDirectory() as folder:
            results.append(measure(args, images, Path(folder)))
    command = "python benchmarks/bench_backfill.py " + " ".join(sys.argv[1:])
    print(f"Machine: {machine()}.\n\nCommand: `{command}`\n\n{table(results, args.cpus)}")


if __name__ == "__main__":
    main()
