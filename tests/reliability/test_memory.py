"""Memory: resident memory after thousands of requests grows by less than 5% over its level after a
warm-up. The default run sends 2,000 requests (about 15 s); the soak sends 20,000:

    .venv/bin/python -m pytest -m soak tests/reliability/test_memory.py
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.image_zoo import _save, photo
from tests.live_server import Server, start, stop


async def drive(server: Server, requests: int, concurrency: int = 8) -> dict[int, int]:
    images = [_save(photo((200 + 7 * i, 150 + 5 * i), seed=i), "JPEG") for i in range(8)]
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        async def worker(offset: int) -> None:
            for i in range(offset, requests, concurrency):
                if i % 50 == 0:  # some bad inputs on the way, so error paths are soaked too
                    files = {"image": ("bad.jpg", b"not an image")}
                else:
                    files = {"image": ("a.jpg", images[i % len(images)])}
                response = await client.post(f"{server.url}/predict", files=files,
                                             data={"category": ("men_tshirts", "sarees")[i % 2]})
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return statuses


def soak(repository, logs, requests: int) -> None:
    server = start(repository, logs)
    try:
        asyncio.run(drive(server, 500))
        warm = server.rss_bytes()
        statuses = asyncio.run(drive(server, requests))
        after = server.rss_bytes()
        growth = (after - warm) / warm
        print(f"{requests} requests {statuses}: rss {warm / 2**20:.1f} -> {after / 2**20:.1f} MiB ({growth:+.2%})")
        assert set(statuses) <= {200, 422} and statuses.get(200, 0) >= 0.9 * requests, statuses
        assert growth < 0.05, f"rss grew {growth:.2%}: {warm} -> {after}"
    finally:
        assert stop(server) == 0, server.output()


def test_memory_is_flat_after_warm_up(tiny_repository, logs):
    soak(tiny_repository, logs, 2_000)


@pytest.mark.soak
def test_memory_is_flat_over_a_long_soak(tiny_repository, logs):
    soak(tiny_repository, logs, 20_000)
