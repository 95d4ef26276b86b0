"""``WORKERS=2``: a real ``python -m service`` parent with two worker processes on one port, driven by real
HTTP clients. Which worker answered is read from the operating system: the worker process that owns the
server end of the client's TCP connection (psutil), so nothing is added to the responses for the test."""

from __future__ import annotations

import http.client
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from benchmarks.onnx_factory import build_repository
from tests.live_server import Server, start, stop
from tests.service.fakes import image_bytes

SERVING = re.compile(r"worker \d+ serving \(pid (\d+)\)")


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repo"), slugs=("men_tshirts", "sarees"))


def serving_pids(server: Server) -> list[int]:
    return [int(pid) for pid in SERVING.findall(server.output())]


def wait_for(condition: Callable[[], Any], what: str, server: Server, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert server.alive(), f"server exited while waiting for {what}: {server.output()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s: {server.output()}"
        time.sleep(0.05)
    return found


@contextmanager
def two_workers(repository: Path, logs: Path, env: dict[str, str] | None = None) -> Iterator[tuple[Server, list[int]]]:
    """A ready parent and the pids of its two serving workers; stopped (exit 0 asserted) on the way out."""
    server = start(repository, logs, {"CATALOG_SERVICE_WORKERS": "2", **(env or {})}, log_level="info")
    try:
        yield server, wait_for(lambda: len(serving_pids(server)) >= 2 and serving_pids(server), "two workers",
                               server)
    finally:
        assert stop(server) == 0, server.output()


def owner(server: Server, pids: list[int], connection: http.client.HTTPConnection) -> int:
    """The worker holding the server end of this (answered, so accepted) connection."""
    assert connection.sock is not None
    local_port = connection.sock.getsockname()[1]
    for pid in pids:
        for tcp in psutil.Process(pid).net_connections("tcp"):
            if tcp.raddr and tcp.raddr.port == local_port and tcp.laddr.port == server.port:
                return pid
    raise AssertionError(f"no worker of {pids} holds the connection from port {local_port}")


def request(connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            ) -> tuple[int, bytes]:
    headers = {"Content-Type": "image/jpeg"} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def connections_on_each_worker(server: Server, pids: list[int], per_worker: int,
                               limit: int = 100) -> dict[int, list[http.client.HTTPConnection]]:
    """Fresh keep-alive connections, one after another, until every worker holds ``per_worker`` of them:
    the kernel spreads them (fails if one worker took ``limit`` in a row)."""
    owned: dict[int, list[http.client.HTTPConnection]] = {pid: [] for pid in pids}
    for _ in range(limit):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        assert request(connection, "GET", "/v2/health/live")[0] == 200
        held = owned[owner(server, pids, connection)]
        if len(held) < per_worker:
            held.append(connection)
        else:
            connection.close()
        if all(len(held) == per_worker for held in owned.values()):
            return owned
    raise AssertionError(f"{limit} connections were not spread over both workers: "
                         f"{ {pid: len(held) for pid, held in owned.items()} }")


def metric(text: str, line_start: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start + " ")]
    assert len(values) == 1, (line_start, values)
    return values[0]


def test_both_workers_serve_and_metrics_count_each_request_once(repository, tmp_path):
    with two_workers(repository, tmp_path) as (server, pids):
        owned = connections_on_each_worker(server, pids, per_worker=1)
        for pid, (connection,) in owned.items():
            for i in range(5):
                status, body = request(connection, "POST", "/predict?category=sarees", image_bytes(color=(i, 9, 9)))
                assert status == 200, body
            assert owner(server, pids, connection) == pid  # kept alive: the same worker answered all five
        with httpx.Client() as client:  # and three more wherever they land
            for _ in range(3):
                assert client.post(f"{server.url}/predict", params={"category": "sarees"},
                                   content=image_bytes(), headers={"Content-Type": "image/jpeg"}).status_code == 200
        for connection, in owned.values():  # each worker's /metrics shows the same totals
            status, body = request(connection, "GET", "/metrics")
            text = body.decode()
            assert metric(text, 'catalog_images_processed_total{model="sarees"}') == 13
            assert metric(text, 'catalog_http_request_duration_seconds_count{method="POST",route="/predict",'
                                'status="200"}') == 13
            assert metric(text, 'catalog_model_ready{model="sarees"}') == 1  # one series, not one per worker
            assert metric(text, 'catalog_queue_depth{model="sarees"}') == 0
            assert metric(text, "process_cpu_seconds_total") > 0
            assert 'pid="' not in text


def sigterm_with_four_queued(server: Server, pids: list[int]) -> list[tuple[int, bytes]]:
    """Two requests held queued in each worker (by a long batching delay) when SIGTERM reaches the parent;
    their answers."""
    owned = connections_on_each_worker(server, pids, per_worker=2)
    with ThreadPoolExecutor(4) as pool:
        queued = [pool.submit(request, connection, "POST", "/predict?category=men_tshirts", image_bytes())
                  for held in owned.values() for connection in held]
        wait_for(lambda: 'catalog_queue_depth{model="men_tshirts"} 4.0' in httpx.get(f"{server.url}/metrics").text,
                 "four queued requests", server)
        server.process.send_signal(signal.SIGTERM)
        return [future.result() for future in queued]


def test_sigterm_drains_every_worker_then_the_parent_exits_0(repository, tmp_path):
    # A long batching delay keeps two requests queued in each worker while the signal arrives.
    with two_workers(repository, tmp_path, {"CATALOG_SERVICE_MAX_QUEUE_DELAY_S": "1.5",
                                            "CATALOG_SERVICE_MAX_BATCH_SIZE": "8"}) as (server, pids):
        metrics_dir = re.search(r"metrics in (\S+)\)", server.output()).group(1)  # type: ignore[union-attr]
        assert Path(metrics_dir).is_dir()
        answers = sigterm_with_four_queued(server, pids)
        assert [status for status, _ in answers] == [200] * 4
        assert {httpx.Response(200, content=body).json()["timings"]["batch_size"] for _, body in answers} == {2}
        assert server.process.wait(timeout=30) == 0, server.output()
        assert not [pid for pid in pids if psutil.pid_exists(pid)]
        assert not Path(metrics_dir).exists()
        with pytest.raises(httpx.TransportError):  # no longer listening
            httpx.get(f"{server.url}/v2/health/live", timeout=2)


def test_a_worker_that_dies_is_reported_and_replaced_and_its_counts_stay(repository, tmp_path):
    with two_workers(repository, tmp_path) as (server, pids):
        owned = connections_on_each_worker(server, pids, per_worker=1)
        for connection, in owned.values():
            for _ in range(3):
                assert request(connection, "POST", "/predict?category=sarees", image_bytes())[0] == 200
        os.kill(pids[0], signal.SIGKILL)
        replacement = wait_for(lambda: [p for p in serving_pids(server) if p not in pids], "a replacement", server)
        assert f"(pid {pids[0]}) died while serving (killed by SIGKILL): starting a replacement" in server.output()
        with httpx.Client() as client:
            answered = client.post(f"{server.url}/predict", params={"category": "sarees"}, content=image_bytes(),
                                   headers={"Content-Type": "image/jpeg"})
            assert answered.status_code == 200
            assert metric(client.get(f"{server.url}/metrics").text,
                          'catalog_images_processed_total{model="sarees"}') == 7
        assert psutil.Process(replacement[0]).ppid() == server.process.pid


def test_a_worker_that_cannot_start_stops_the_service_with_its_message(tmp_path):
    build_repository(tmp_path, slugs=("kurtis",))
    (tmp_path / "kurtis" / "1" / "model.onnx").write_bytes(b"replaced")
    failed = start(tmp_path, tmp_path, {"CATALOG_SERVICE_WORKERS": "2"}, wait_ready=False, log_level="info")
    assert failed.process.wait(timeout=60) == 1
    output = failed.output()
    assert "error: cannot serve: kurtis:" in output and "failed to start (exit code 1)" in output
    metrics_dir = re.search(r"metrics in (\S+)\)", output).group(1)  # type: ignore[union-attr]
    assert not Path(metrics_dir).exists()
