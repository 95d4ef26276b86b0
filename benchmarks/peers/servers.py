"""The servers a peers benchmark runs side by side: each a subprocess in its own process group, so it can
be paused (SIGSTOP) while another is measured and its CPU counted over every process it started
(LitServe's inference worker included). The service's worker and inference processes make groups of their
own (so a signal to a worker's group leaves its siblings alone): those count too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_service import free_port, read_response
from service.process_tree import children

ROOT = Path(__file__).resolve().parent.parent.parent


class ServerProcess:
    def __init__(self, name: str, command: list[str], health_path: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.health_path = health_path
        self.process = subprocess.Popen(
            [sys.executable, *command, "--port", str(self.port)], cwd=ROOT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.process.returncode}")
            try:
                if asyncio.run(self._status(self.health_path)) == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.name} was not ready within {timeout_s:.0f} s")

    async def _status(self, path: str) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status, _ = await read_response(reader)
        writer.close()
        return status

    def groups(self) -> set[int]:
        """The server's process group, and the groups its direct children lead."""
        found = {self.process.pid}
        for child in children(self.process.pid):
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                found.add(os.getpgid(child))
        return found

    def pause(self) -> None:
        for group in self.groups():
            os.killpg(group, signal.SIGSTOP)

    def resume(self) -> None:
        for group in self.groups():
            os.killpg(group, signal.SIGCONT)

    def cpu_seconds(self) -> float:
        """User + system CPU of every live process in the server's groups."""
        groups = self.groups()
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(fields[2]) in groups:  # field 5 of stat, the process group
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.resume()
        groups = self.groups()
        os.killpg(self.process.pid, signal.SIGTERM)  # the service's parent drains its workers itself
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for group in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            self.process.wait()


def start_servers(repository: Path, slug: str, threads: int, litserve: bool = True,
                  variants: dict[str, dict[str, str]] | None = None) -> dict[str, ServerProcess]:
    """The service as shipped (its defaults, this one model), its ``variants`` (name -> settings) and the
    peers, every one ready."""
    where = ["--repository", str(repository), "--category", slug, "--threads", str(threads)]
    service = ["-m", "service", "--repository", str(repository), "--log-level", "warning"]
    servers = {name: ServerProcess(name, service, "/v2/health/ready", {
        "CATALOG_SERVICE_CATEGORIES": slug, **{f"CATALOG_SERVICE_{k.upper()}": v for k, v in settings.items()}})
        for name, settings in {"service": {}, **(variants or {})}.items()}
    servers["fastapi"] = ServerProcess("fastapi", ["-m", "benchmarks.peers.fastapi_peer", *where], "/health")
    if threads > 1:  # the service runs batches under load on one thread each: the peer gets that choice too
        servers["fastapi_one_thread"] = ServerProcess(
            "fastapi_one_thread", ["-m", "benchmarks.peers.fastapi_peer", *where[:-1], "1"], "/health")
    if litserve:
        servers["litserve_batch"] = ServerProcess(
            "litserve_batch", ["-m", "benchmarks.peers.litserve_peer", *where, "--max-batch-size", "16"], "/health")
        servers["litserve"] = ServerProcess("litserve", ["-m", "benchmarks.peers.litserve_peer", *where], "/health")
    try:
        for server in servers.values():
            server.wait_ready()
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers
