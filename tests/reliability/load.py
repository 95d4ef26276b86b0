"""An asyncio load generator for the reliability suite: closed loop (to measure capacity) and open loop
(offered load at a fixed rate, every request on its own task, so a slow server cannot slow the offer)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx


@dataclass
class Outcome:
    sent_at: float
    latency_s: float
    status: int | None  # None: a transport error
    error: str = ""
    retry_after: str | None = None
    code: str | None = None


async def predict(client: httpx.AsyncClient, url: str, image: bytes, category: str = "men_tshirts") -> Outcome:
    sent = time.perf_counter()
    try:
        response = await client.post(f"{url}/predict", files={"image": ("photo.jpg", image, "image/jpeg")},
                                     data={"category": category})
    except httpx.HTTPError as error:
        return Outcome(sent, time.perf_counter() - sent, None, f"{type(error).__name__}: {error}")
    latency = time.perf_counter() - sent
    code = None
    if response.status_code != 200:
        code = response.json().get("code")
    else:
        assert response.json()["attributes"]  # a complete body
    return Outcome(sent, latency, response.status_code, retry_after=response.headers.get("retry-after"), code=code)


async def closed_loop(url: str, image: bytes, workers: int, seconds: float) -> float:
    """Requests per second completed with 200 by ``workers`` clients that each wait for their answer."""
    done = 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=workers)) as client:
        started = time.perf_counter()
        stop_at = started + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                outcome = await predict(client, url, image)
                if outcome.status in (503, 504):
                    # Shed while the batcher learns the model's speed, or late on a busy machine: not
                    # completed work, so not counted; the overload phase is where these are judged.
                    await asyncio.sleep(0.05)
                    continue
                assert outcome.status == 200, outcome
                done += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
        return done / (time.perf_counter() - started)


async def open_loop(url: str, image: bytes, rate: float, seconds: float) -> list[Outcome]:
    """Offer ``rate`` requests per second for ``seconds``, whatever the answers take."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1000,
                                                                  max_keepalive_connections=1000)) as client:
        tasks = []
        started = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(predict(client, url, image)))
        return list(await asyncio.gather(*tasks))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
