"""A real ``python -m service`` (uvicorn) in a subprocess on a free loopback port, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str


def start(repository: Path, env: dict[str, str] | None = None, wait_ready: bool = True) -> Server:
    port = free_port()
    environment = {**os.environ, "CATALOG_SERVICE_SESSION_THREADS": "1", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--repository", str(repository), "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    server = Server(process, f"http://127.0.0.1:{port}")
    if wait_ready:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}: {process.stdout.read()}")
            try:
                if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        process.kill()
        raise AssertionError("server did not become ready within 30 s")
    return server


def stop(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=30)
