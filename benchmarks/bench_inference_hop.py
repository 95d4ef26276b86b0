"""What the hop to the inference process (``SHARED_INFERENCE``) costs by itself: one front end (this process)
sends batches of real-sized images through its shared-memory slot to an inference server in another process
whose model does nothing, and both processes' CPU is counted per call; the same images stacked in-process
(what a local runtime does instead) are the baseline.

    .venv/bin/python benchmarks/bench_inference_hop.py [--calls 2000] [--batch 1 8] [--size 224]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.connection import Listener
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_service import process_cpu_s  # noqa: E402
from service.inference_client import InferenceLink, ModelSlots  # noqa: E402
from service.inference_process import accept  # noqa: E402
from service.inference_protocol import Hello, InferenceAddress, RemoteModel  # noqa: E402
from service.inference_server import InferenceServer, Served  # noqa: E402
from service.metrics import ServiceMetrics  # noqa: E402
from service.model_runner import Outputs, Runtime  # noqa: E402

ATTRIBUTES = {"a": 4, "b": 2, "c": 2, "d": 3, "e": 2}
"""The demo men_tshirts model's heads (values per attribute)."""


def nothing(batch: np.ndarray, admitted: int) -> Outputs:
    n = len(batch)
    return {name: np.zeros((n, k), np.float32) for name, k in ATTRIBUTES.items()}, np.zeros(n, np.float32)


def model(shape: tuple[int, ...], max_batch: int) -> RemoteModel:
    return RemoteModel(1, "none", "fp32", max_batch, shape)


def serve(address: InferenceAddress, shape: tuple[int, ...], max_batch: int) -> None:
    """The inference process: the real server around a model that does nothing."""
    served = {"m": Served(Runtime(nothing, "none", "fp32"), max_batch, shape)}
    server = InferenceServer(served, Hello({"m": model(shape, max_batch)}), ServiceMetrics())
    server.start()
    accept(Listener(address.path, family="AF_UNIX"), server, address.authkey)


def measure(run: object, images: list[np.ndarray], calls: int, server_pid: int | None) -> tuple[float, float]:
    """CPU microseconds per call here and in the server."""
    assert callable(run)
    for _ in range(50):
        run(images, len(images))
    mine, theirs = time.process_time(), process_cpu_s(server_pid) if server_pid else 0.0
    for _ in range(calls):
        run(images, len(images))
    here = (time.process_time() - mine) / calls * 1e6
    there = ((process_cpu_s(server_pid) - theirs) / calls * 1e6) if server_pid else 0.0
    return here, there


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    args = parser.parse_args()
    shape, max_batch = (3, args.size, args.size), max(args.batch)
    with tempfile.TemporaryDirectory() as folder:
        address = InferenceAddress(os.path.join(folder, "socket"), os.urandom(16))
        process = multiprocessing.get_context("spawn").Process(target=serve, args=(address, shape, max_batch),
                                                               daemon=True)
        process.start()
        while not os.path.exists(address.path):
            time.sleep(0.05)
        link = InferenceLink(address)
        link.start()
        slots = ModelSlots(link, "m", model(shape, max_batch), max_batch, 1)

        def local(items: list[np.ndarray], admitted: int) -> Outputs:
            return nothing(np.stack(items), admitted)

        print(f"{os.cpu_count()} CPU cores; images {shape}; {args.calls} calls per row; CPU microseconds per call")
        print("| batch | in-process stack + model | hop: front end | hop: inference process | hop: both, "
              "beyond in-process |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for batch in args.batch:
            images = [np.random.rand(*shape).astype(np.float32) for _ in range(batch)]
            alone, _ = measure(local, images, args.calls, None)
            front, inference = measure(slots.run, images, args.calls, process.pid)
            print(f"| {batch} | {alone:.0f} | {front:.0f} | {inference:.0f} | {front + inference - alone:.0f} |")
        slots.close()
        link.stop()
        process.terminate()


if __name__ == "__main__":
    main()
