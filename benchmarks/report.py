"""Locust summary for BENCHMARKS.md: a headless run of ``load_tests/locustfile.py`` against the service,
printed as markdown (machine, command, per-route table, images/s as locust and as the service counted them).

    .venv/bin/python benchmarks/report.py [--repository DIR | --host URL] [--users 10] [--duration 60]

With ``--repository`` (default: ``models/demo``) it starts ``python -m service`` on a free loopback port
and stops it afterwards; with ``--host`` it loads a service that is already running. The CSV files and the
JSON summary stay in ``--out`` (default ``build/locust``). It is a measuring script, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "load_tests" / "locustfile.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@contextlib.contextmanager
def service(repository: Path, threads: int) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "CATALOG_SERVICE_SESSION_THREADS": str(threads)} if threads else dict(os.environ)
    process = subprocess.Popen([sys.executable, "-m", "service", "--repository", str(repository), "--port", str(port),
                                "--log-level", "warning"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the service exited with {process.returncode}")
            with contextlib.suppress(OSError):
                get(f"{url}/v2/health/ready")
                break
            if time.monotonic() > deadline:
                raise SystemExit("the service was not ready within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def images_processed(url: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in get(f"{url}/metrics").splitlines()
               if line.startswith("catalog_images_processed_total{"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, Python "
            f"{platform.python_version()}; load average at the start {load}")


def markdown(summary: dict, stats: list[dict[str, str]], served: float, seconds: float, command: str) -> str:
    lines = [f"Machine: {machine()}.", "", f"Command: `{command}`", "",
             "| route | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in stats:
        lines.append(f"| {row['Name']} | {row['Request Count']} | {row['Failure Count']} | "
                     f"{float(row['Requests/s']):.2f} | {row['50%']} | {row['95%']} | {row['99%']} | "
                     f"{float(row['Max Response Time']):.0f} |")
    lines += ["", f"Images accepted: {summary['images_ok']} in {summary['seconds']:.1f} s = "
                  f"**{summary['images_per_s']:.1f} images/s** (locust; /batch counts {summary['batch_size']} "
                  f"images per request); the service's `catalog_images_processed_total` grew by {served:.0f} "
                  f"({served / seconds:.1f} images/s over the whole run). Shed (503) requests: {summary['shed']}. "
                  f"Bounds broken: {', '.join(summary['problems']) or 'none'}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--repository", type=Path, default=ROOT / "models" / "demo")
    target.add_argument("--host", help="base URL of a running service")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--spawn-rate", type=float, default=5)
    parser.add_argument("--duration", type=int, default=60, help="seconds")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--session-threads", type=int, default=0, help="for the started service; 0: its default")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "locust")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        url = args.host or stack.enter_context(service(args.repository, args.session_threads))
        locust = ["locust", "-f", "load_tests/locustfile.py", "--host", url, "--headless", "-u", str(args.users),
                  "-r", f"{args.spawn_rate:g}", "-t", f"{args.duration}s", "--batch-size", str(args.batch_size),
                  "--csv", str(args.out / "run"), "--only-summary", "--summary-json", str(args.out / "summary.json")]
        before, started = images_processed(url), time.monotonic()
        run = subprocess.run([sys.executable, "-m", *locust], cwd=ROOT)
        served, seconds = images_processed(url) - before, time.monotonic() - started
    summary = json.loads((args.out / "summary.json").read_text())
    with (args.out / "run_stats.csv").open(newline="") as handle:
        stats = list(csv.DictReader(handle))
    print(markdown(summary, stats, served, seconds, shlex.join(locust).replace(url, "URL")))
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
