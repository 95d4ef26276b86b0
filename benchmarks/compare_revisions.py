"""Two checkouts of the service side by side on one model: latency at concurrency 1 (alternated
requests, median of the pairwise differences) and throughput at concurrency 16 (alternated windows,
ratio of medians). For checking that a change costs nothing on the fast path, on a machine whose speed
drifts more than the difference being looked for.

    .venv/bin/python benchmarks/compare_revisions.py --old /path/to/old/checkout --new . \\
        --repository models/demo --category men_tshirts

Make the old checkout with ``git worktree add /tmp/old REV``; both run with this interpreter.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(checkout: Path, repository: Path, category: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "CATALOG_SERVICE_CATEGORIES": category}
    process = subprocess.Popen([sys.executable, "-m", "service", "--repository", str(repository), "--port", str(port),
                                "--log-level", "warning"], cwd=checkout, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{checkout}: the service did not become ready")


def upload() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (1000, 800, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def post(connection: http.client.HTTPConnection, path: str, data: bytes) -> int:
    connection.request("POST", path, body=data, headers={"Content-Type": "image/jpeg"})
    response = connection.getresponse()
    response.read()
    return response.status


def latency_pairs(ports: dict[str, int], path: str, data: bytes, pairs: int) -> dict[str, list[float]]:
    connections = {name: http.client.HTTPConnection("127.0.0.1", port) for name, port in ports.items()}
    seconds: dict[str, list[float]] = {name: [] for name in ports}
    for i in range(pairs + 20):
        for name in sorted(ports, reverse=bool(i % 2)):
            started = time.perf_counter()
            assert post(connections[name], path, data) == 200
            if i >= 20:  # warm-up pairs
                seconds[name].append((time.perf_counter() - started) * 1e3)
            time.sleep(0.04)  # an idle gap between requests, as at low load: cores fall asleep
    return seconds


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU time of a process (all its threads), or of one of its threads (the main thread's id is the pid:
    the event loop's)."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput_window(port: int, path: str, data: bytes, seconds: float, clients: int = 16) -> float:
    done = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port)
        while time.perf_counter() < stop:
            if post(connection, path, data) == 200:
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--new", type=Path, default=Path("."), help="the checkout under test (default: here)")
    parser.add_argument("--repository", type=Path, default=Path("models/demo"))
    parser.add_argument("--old-repository", type=Path, default=None,
                        help="the old checkout's models, when the new manifests are a format it cannot read "
                             "(default: --repository)")
    parser.add_argument("--category", default="men_tshirts")
    parser.add_argument("--pairs", type=int, default=300, help="alternated requests at concurrency 1")
    parser.add_argument("--windows", type=int, default=6, help="alternated throughput windows per checkout")
    parser.add_argument("--window-seconds", type=float, default=5.0)
    args = parser.parse_args()
    repository, data, path = args.repository.resolve(), upload(), f"/predict?category={args.category}"
    old_repository = (args.old_repository or args.repository).resolve()
    servers = {"old": start(args.old.resolve(), old_repository, args.category),
               "new": start(args.new.resolve(), repository, args.category)}
    ports = {name: port for name, (_, port) in servers.items()}
    try:
        latencies = latency_pairs(ports, path, data, args.pairs)
        rates: dict[str, list[float]] = {"old": [], "new": []}
        cpu_ms: dict[str, list[float]] = {"old": [], "new": []}
        loop_ms: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(args.windows):
            for name in sorted(ports, reverse=bool(i % 2)):
                pid = servers[name][0].pid
                before = cpu_seconds(pid), cpu_seconds(pid, pid)
                rates[name].append(throughput_window(ports[name], path, data, args.window_seconds))
                requests = max(rates[name][-1] * args.window_seconds, 1)
                cpu_ms[name].append((cpu_seconds(pid) - before[0]) / requests * 1e3)
                loop_ms[name].append((cpu_seconds(pid, pid) - before[1]) / requests * 1e3)
    finally:
        for process, _ in servers.values():
            process.terminate()
    differences = [new - old for new, old in zip(latencies["new"], latencies["old"], strict=True)]
    print(f"{args.repository} {args.category}; {os.cpu_count()} CPU cores; 800x1000 JPEG ({len(data) // 1024} KiB)\n")
    print("| measure | old | new | new against old |\n| --- | --- | --- | --- |")
    old_ms, new_ms = statistics.median(latencies["old"]), statistics.median(latencies["new"])
    print(f"| latency at concurrency 1, median of {args.pairs} | {old_ms:.2f} ms | {new_ms:.2f} ms | "
          f"{statistics.median(differences):+.2f} ms (median of pairs) |")
    print(f"| images/s at concurrency 16, {args.windows} windows of {args.window_seconds:g} s | "
          f"{statistics.median(rates['old']):.1f} | {statistics.median(rates['new']):.1f} | "
          f"{statistics.median(rates['new']) / statistics.median(rates['old']):.2f}x (ratio of medians) |")
    for label, values in (("server CPU per request at concurrency 16", cpu_ms),
                          ("of it, the event-loop thread's", loop_ms)):
        old, new = statistics.median(values["old"]), statistics.median(values["new"])
        print(f"| {label} | {old:.2f} ms | {new:.2f} ms | {new - old:+.2f} ms (medians of windows) |")
    print(f"\nwindows, images/s: old {[round(r, 1) for r in rates['old']]}; new {[round(r, 1) for r in rates['new']]}")


if __name__ == "__main__":
    main()
