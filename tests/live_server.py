"""A real ``python -m service`` (uvicorn) in a subprocess on a free loopback port, for tests. Its output
goes to a log file, not a pipe, so a chatty server can never block on a full pipe."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.helpers import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


def start(repository: Path, log_dir: Path, env: dict[str, str] | None = None, wait_ready: bool = True,
          timeout_s: float = 60, log_level: str = "warning") -> Server:
    port = free_port()
    settings = {"CATALOG_SERVICE_SESSION_THREADS": "1", "CATALOG_SERVICE_PREPROCESS_THREADS": "1", **(env or {})}
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CATALOG_SERVICE_")} | settings
    log = log_dir / f"server-{port}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--repository", str(repository), "--port", str(port),
             "--log-level", log_level],
            cwd=ROOT, env=environment, stdout=handle, stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log, port, settings)
    if wait_ready:
        deadline = time.monotonic() + timeout_s
        while not server.ready():
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}: {server.output()}")
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"server not ready within {timeout_s} s: {server.output()}")
            time.sleep(0.1)
    return server


def stop(server: Server, timeout_s: float = 30) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@contextmanager
def running(repository: Path, log_dir: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """:func:`start` a ready server, :func:`stop` it on the way out whatever happened in between."""
    server = start(repository, log_dir, env)
    try:
        yield server
    finally:
        stop(server)
