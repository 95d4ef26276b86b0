"""The PyTorch backend measured: the model's own limit in-process, then the service end to end from JPEG
uploads (800x1000, bare body) at concurrency 1/16/64, for each configuration asked for; prints a markdown
table (and writes it with --out). ``benchmarks/device_run.sh`` runs it on the GPU machine.

    python benchmarks/bench_torch_backend.py --backbone convnext-base --model-size 384 \\
        --configs torch,torch+gpu_decode --concurrency 1,16,64 --out results.md
    python benchmarks/bench_torch_backend.py --backbone convnext-atto --model-size 128 --configs onnxruntime,torch

A configuration is a backend (``onnxruntime`` or ``torch``) with ``+setting=value`` service settings, e.g.
``torch+torch_dtype=float16``; ``+gpu_decode`` alone means ``+gpu_decode=1``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_service import Server, load, make_jpegs, pct, raw_request  # noqa: E402
from catalog.manifest import load_manifest, resolve_version  # noqa: E402

SLUG = "men_tshirts"


def build(folder: Path, backbone: str, size: int) -> Path:
    """A random-init model exported fp32 with its torch.export program (no downloads)."""
    from benchmarks.random_repository import build_random_repository

    started = time.perf_counter()
    build_random_repository(folder, slug=SLUG, backbone=backbone, image_size=size, precision="fp32",
                            torch_export=True)
    print(f"exported random-init {backbone} at {size} px in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def parse_config(text: str) -> dict[str, str]:
    """``torch+gpu_decode+torch_dtype=float16`` -> the service settings it stands for."""
    backend, *extras = text.split("+")
    return {"backend": backend, **dict(e.split("=", 1) if "=" in e else (e, "1") for e in extras)}


def model_limit(repository: Path, batch_sizes: list[int], seconds: float) -> list[str]:
    """Images/s of the torch runtime alone (as the service builds it) on preprocessed batches, per batch size."""
    import torch

    from service.settings import Settings
    from service.torch_runtime import TorchRunner, load_module, resolve_choice

    folder = resolve_version(repository, SLUG)
    manifest = load_manifest(folder)
    settings = Settings(repository=repository, backend="torch")
    choice = resolve_choice(settings)
    if choice.device.type == "cpu":
        torch.set_num_threads(settings.resolved_session_threads)  # as the service does
    runner = TorchRunner(load_module(folder, manifest, settings, choice.device), manifest, choice, max(batch_sizes))
    rows = []
    for size in batch_sizes:
        batch = torch.randn((size, *manifest.preprocess_spec().input_shape)).to(choice.device)
        runner.run(batch)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            runner.run(batch)  # returns host arrays: includes the device sync and copy back
            count += size
        rate = count / (time.perf_counter() - started)
        rows.append(f"| model alone ({choice.provider} {choice.precision}), batch {size} | {rate:,.0f} | | | |")
        print(rows[-1], flush=True)
    return rows


def serve(repository: Path, config: str, jpegs: list[bytes], concurrency: list[int], seconds: float,
          max_batch: int) -> list[str]:
    server = Server(repository, SLUG, max_batch_size=max_batch, **parse_config(config))  # type: ignore[arg-type]
    requests = [raw_request(j, SLUG) for j in jpegs]
    rows = []
    try:
        for c in concurrency:
            result = asyncio.run(load(server, requests, c, seconds, warmup_s=min(2.0, seconds)))
            rows.append(f"| service `{config}`, concurrency {c} | {result.rate:,.0f} | {pct(result.latencies, 50):.1f} "
                        f"| {pct(result.latencies, 99):.1f} | {result.cpu_ms_per_image:.1f} |")
            print(rows[-1], flush=True)
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="model repository (default: build a random-init one)")
    parser.add_argument("--backbone", default="convnext-base")
    parser.add_argument("--model-size", type=int, default=384)
    parser.add_argument("--configs", default="torch", help="comma-separated configurations (see above)")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--batch-sizes", default="1,16,64", help="batch sizes of the model-alone limit")
    parser.add_argument("--max-batch-size", type=int, default=64, help="the service's max_batch_size")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured phase")
    parser.add_argument("--image-size", default="800x1000", help="uploaded JPEGs, WxH")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    width, height = (int(v) for v in args.image_size.split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        repository = args.repository or build(Path(scratch) / "repository", args.backbone, args.model_size)
        lines = ["| what | images/s | p50 ms | p99 ms | server CPU ms/image |", "| --- | ---: | ---: | ---: | ---: |"]
        if any(c.startswith("torch") for c in args.configs.split(",")):
            lines += model_limit(repository, [int(b) for b in args.batch_sizes.split(",")], args.duration / 2)
        jpegs = make_jpegs(8, (width, height))
        for config in args.configs.split(","):
            lines += serve(repository, config, jpegs, [int(c) for c in args.concurrency.split(",")], args.duration,
                           args.max_batch_size)
    table = "\n".join(lines)
    kilobytes = np.mean([len(j) for j in jpegs]) / 1024
    print(f"\n{args.backbone} {args.model_size} px, {width}x{height} JPEG uploads ({kilobytes:.0f} KB), "
          f"bare body\n\n{table}")
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
