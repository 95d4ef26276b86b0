"""Helpers for the hardening tests: a server's peak memory, raw sockets, and concurrent uploads."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.live_server import Server


def rss_and_peak_bytes(server: Server) -> tuple[int, int]:
    """The server's resident memory now and its high-water mark since it started (VmHWM)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def post_many(url: str, bodies: list[tuple[bytes, str]], timeout_s: float = 60) -> list[httpx.Response]:
    """Every ``(body, content type)`` posted at once, each on its own connection."""
    def post(item: tuple[bytes, str]) -> httpx.Response:
        return httpx.post(url, content=item[0], headers={"Content-Type": item[1]}, timeout=timeout_s)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def timed(call) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def raw_connection(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.settimeout(30)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0
