"""SIGTERM during load: readiness flips first (while the server still answers), every request the
server accepted gets a complete response, and the process exits 0 within the shutdown delay plus the
drain timeout. Clients behave like a load balancer: they stop sending once readiness is 503."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

import httpx

from tests.image_zoo import _save, photo
from tests.live_server import start

DELAY_S = 1.0
DRAIN_S = 8.0


@dataclass
class Result:
    sent: float
    done: float
    status: int | None
    detail: str


def test_sigterm_under_load_flips_readiness_first_and_answers_every_accepted_request(slow_repository, logs):
    server = start(slow_repository, logs, {
        "CATALOG_SERVICE_SHUTDOWN_DELAY_S": str(DELAY_S), "CATALOG_SERVICE_DRAIN_TIMEOUT_S": str(DRAIN_S),
        "CATALOG_SERVICE_MAX_BATCH_SIZE": "4", "CATALOG_SERVICE_REQUEST_TIMEOUT_S": "5"})
    image = _save(photo((160, 120)), "JPEG")
    results: list[Result] = []
    lock = threading.Lock()
    stop_sending = threading.Event()
    flipped: list[float] = []

    def client() -> None:
        while not stop_sending.is_set():
            sent = time.monotonic()
            try:  # a fresh connection per request, as from many clients
                response = httpx.post(f"{server.url}/predict", files={"image": ("a.jpg", image)},
                                      data={"category": "men_tshirts"}, timeout=30,
                                      headers={"Connection": "close"})
                status = response.status_code
                body = response.json()
                detail = body.get("code", "") if status != 200 else str(bool(body["attributes"]))
                if status == 503 and detail == "shutting_down":
                    stop_sending.set()
            except httpx.ConnectError as error:
                status, detail = None, f"refused: {error}"
            except Exception as error:  # a lost or truncated response
                status, detail = -1, f"{type(error).__name__}: {error}"
            with lock:
                results.append(Result(sent, time.monotonic(), status, detail))

    def readiness() -> None:
        while not flipped:
            try:
                if httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code == 503:
                    flipped.append(time.monotonic())
                    stop_sending.set()
            except httpx.TransportError:
                return
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(6)] + [threading.Thread(target=readiness)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=DELAY_S + DRAIN_S + 10)
    exited = time.monotonic()
    stop_sending.set()
    for thread in threads:
        thread.join(timeout=30)

    lost = [r for r in results if r.status == -1]
    assert not lost, lost
    assert code == 0, server.output()
    assert exited - signalled < DELAY_S + DRAIN_S + 1.0
    # Readiness turned 503 right after the signal, while the server was still answering.
    assert flipped and flipped[0] - signalled < 0.5
    refused = [r for r in results if r.status is None]
    assert all(r.sent > flipped[0] for r in refused), refused
    # Every answer is complete: a prediction (admitted requests, including those still queued or running
    # when the signal came), or a 503 telling the client to go elsewhere (shed, or arrived after it).
    answered = [r for r in results if r.status is not None]
    bad = [r for r in answered if not (r.status == 200 and r.detail == "True")
           and not (r.status == 503 and r.detail in ("shutting_down", "queue_full"))]
    assert not bad, bad
    assert not [r for r in answered if r.detail == "shutting_down" and r.done < signalled]
    finished_after = [r for r in answered if r.status == 200 and r.sent < signalled < r.done]
    assert finished_after, "no request was in flight at the signal"
    print(f"{len(answered)} answered, {len(finished_after)} in flight at SIGTERM finished with 200, "
          f"{sum(r.detail == 'shutting_down' for r in answered)} told to go elsewhere, {len(refused)} refused "
          f"connections; readiness flipped after {flipped[0] - signalled:.3f} s, exit after "
          f"{exited - signalled:.2f} s")
