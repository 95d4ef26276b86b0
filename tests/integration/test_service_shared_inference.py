"""``WORKERS=2`` with ``SHARED_INFERENCE``: a real ``python -m service`` parent, two front ends and one
inference process, driven by real HTTP clients."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.onnx_factory import build_repository, write_version
from tests.integration.test_service_workers import (
    connections_on_each_worker,
    metric,
    request,
    serving_pids,
    sigterm_with_four_queued,
    wait_for,
)
from tests.live_server import Server, running, start, stop
from tests.service.fakes import image_bytes

SHARED = {"CATALOG_SERVICE_WORKERS": "2", "CATALOG_SERVICE_SHARED_INFERENCE": "true"}
STARTED = re.compile(r"worker \d+ started \(pid (\d+)\)")
INFERENCE_SERVING = re.compile(r"inference process serving \(pid (\d+)\)")
COLORS = [(i * 40, 255 - i * 30, 9) for i in range(6)]


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repo"), slugs=("men_tshirts", "sarees"))


def inference_pids(server: Server) -> list[int]:
    return [int(pid) for pid in INFERENCE_SERVING.findall(server.output())]


@contextmanager
def shared(repository: Path, logs: Path, env: dict[str, str] | None = None) -> Iterator[tuple[Server, list[int]]]:
    """A ready parent and the pids of its two serving front ends; stopped (exit 0 asserted) on the way out."""
    server = start(repository, logs, {**SHARED, **(env or {})}, log_level="info")
    try:
        yield server, wait_for(lambda: len(serving_pids(server)) >= 2 and serving_pids(server), "two front ends",
                               server)
    finally:
        assert stop(server) == 0, server.output()


def attributes(body: bytes) -> dict[str, tuple[str, float]]:
    answer = httpx.Response(200, content=body).json()["attributes"]
    return {name: (a["decoded_value"], a["confidence"]) for name, a in answer.items()}


def test_front_ends_answer_as_one_worker_does_with_one_copy_of_each_model_and_count_once(repository, tmp_path):
    with running(repository, tmp_path) as single, httpx.Client() as client:
        expected = [attributes(client.post(f"{single.url}/predict", params={"category": "sarees"},
                                           content=image_bytes(color=color),
                                           headers={"Content-Type": "image/jpeg"}).content) for color in COLORS]
    with shared(repository, tmp_path) as (server, pids):
        owned = connections_on_each_worker(server, pids, per_worker=1)
        for (connection,) in owned.values():  # every image through each front end
            for color, want in zip(COLORS, expected, strict=True):
                status, body = request(connection, "POST", "/predict?category=sarees", image_bytes(color=color))
                assert status == 200, body
                got = attributes(body)
                assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in want.items()}
                assert {k: v[1] for k, v in got.items()} == pytest.approx({k: v[1] for k, v in want.items()}, abs=1e-5)
        text = httpx.get(f"{server.url}/metrics").text
        output = server.output()
    answered = 2 * len(COLORS)
    assert metric(text, 'catalog_images_processed_total{model="sarees"}') == answered
    assert metric(text, 'catalog_http_request_duration_seconds_count{method="POST",route="/predict",'
                        'status="200"}') == answered
    assert metric(text, 'catalog_inference_batch_size_count{model="sarees"}') == answered  # model calls
    assert metric(text, 'catalog_inference_duration_seconds_count{model="sarees"}') == answered
    assert 'catalog_inference_batch_size_count{model="men_tshirts"}' not in text  # no warm-up counted
    for slug in ("sarees", "men_tshirts"):
        assert metric(text, f'catalog_model_copies{{model="{slug}"}}') == 1
        assert len(re.findall(rf"loaded {slug} v1 .*CPUExecutionProvider\)", output)) == 1  # the inference process
        assert len(re.findall(rf"loaded {slug} v1 .*, run by the inference process\)", output)) == 2
    assert metric(text, 'catalog_model_ready{model="sarees"}') == 1


def test_more_batches_in_flight_than_preprocessing_threads_start_and_serve_with_shared_inference(repository, tmp_path):
    # Neither the front ends (their batches are calls to the inference process) nor the inference process (it
    # runs the front ends' batches on its own threads) runs batches on preprocessing threads.
    env = {"CATALOG_SERVICE_MAX_BATCHES_IN_FLIGHT": "2", "CATALOG_SERVICE_PREPROCESS_THREADS": "1"}
    with shared(repository, tmp_path, env) as (server, _):
        response = httpx.post(f"{server.url}/predict", params={"category": "sarees"}, content=image_bytes(),
                              headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200, response.text


def test_sigterm_drains_the_front_ends_then_the_inference_process(repository, tmp_path):
    with shared(repository, tmp_path, {"CATALOG_SERVICE_MAX_QUEUE_DELAY_S": "1.5",
                                       "CATALOG_SERVICE_MAX_BATCH_SIZE": "8"}) as (server, pids):
        inference = inference_pids(server)
        answers = sigterm_with_four_queued(server, pids)
        assert [status for status, _ in answers] == [200] * 4
        assert server.process.wait(timeout=30) == 0, server.output()
    assert not [pid for pid in [*pids, *inference] if psutil.pid_exists(pid)]
    output = server.output()
    assert output.index("inference process stopping (SIGTERM)") > max(
        output.index(f"Finished server process [{pid}]") for pid in pids)


def test_a_killed_inference_process_gives_503s_and_not_ready_until_it_is_restarted(repository, tmp_path):
    with shared(repository, tmp_path) as (server, pids), httpx.Client(timeout=30) as client:
        def predict() -> httpx.Response:
            return client.post(f"{server.url}/predict", params={"category": "sarees"}, content=image_bytes(),
                               headers={"Content-Type": "image/jpeg"})

        expected = attributes(predict().content)
        (first,) = inference_pids(server)
        os.kill(first, signal.SIGSTOP)  # holds the next batch inside it
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(predict)
            wait_for(lambda: 'catalog_admitted_images{model="sarees"} 1.0' in client.get(f"{server.url}/metrics").text,
                     "the request admitted", server)
            server.process.send_signal(signal.SIGSTOP)  # the parent restarts it only once we let it
            os.kill(first, signal.SIGKILL)
            failed = held.result()
        assert failed.status_code == 503, failed.text
        assert failed.json()["code"] == "inference_unavailable"
        assert "the inference process is unavailable" in failed.json()["error"]
        for (connection,) in connections_on_each_worker(server, pids, per_worker=1).values():  # while it is down
            wait_for(lambda: request(connection, "GET", "/v2/health/ready")[0] == 503,  # noqa: B023
                     "the front end not ready", server)
            status, body = request(connection, "POST", "/predict?category=sarees", image_bytes())
            assert status == 503 and b"inference_unavailable" in body
        assert metric(request(connection, "GET", "/metrics")[1].decode(), 'catalog_model_ready{model="sarees"}') == 0
        server.process.send_signal(signal.SIGCONT)
        second = wait_for(lambda: [p for p in inference_pids(server) if p != first], "a new inference process", server)
        assert f"inference process (pid {first}) died while serving (killed by SIGKILL)" in server.output()
        assert psutil.Process(second[0]).ppid() == server.process.pid
        assert serving_pids(server) == pids  # the front ends stayed
        for (connection,) in connections_on_each_worker(server, pids, per_worker=1).values():
            wait_for(lambda: request(connection, "GET", "/v2/health/ready")[0] == 200,  # noqa: B023
                     "the front end ready again", server)
            status, body = request(connection, "POST", "/predict?category=sarees", image_bytes())
            assert status == 200 and attributes(body) == expected
        assert metric(request(connection, "GET", "/metrics")[1].decode(), 'catalog_model_ready{model="sarees"}') == 1


def test_a_front_end_that_dies_with_the_inference_process_is_replaced_once_it_is_back(repository, tmp_path):
    with shared(repository, tmp_path) as (server, pids):
        (first,) = inference_pids(server)
        server.process.send_signal(signal.SIGSTOP)  # both die before the parent sees either
        os.kill(first, signal.SIGKILL)
        os.kill(pids[0], signal.SIGKILL)
        server.process.send_signal(signal.SIGCONT)
        (replacement,) = wait_for(lambda: [p for p in serving_pids(server) if p not in pids], "a new front end",
                                  server)
        assert len(inference_pids(server)) == 2 and "failed to start" not in server.output()
        for (connection,) in connections_on_each_worker(server, [replacement, pids[1]], per_worker=1).values():
            wait_for(lambda: request(connection, "GET", "/v2/health/ready")[0] == 200,  # noqa: B023
                     "the front end ready", server)
            assert request(connection, "POST", "/predict?category=sarees", image_bytes())[0] == 200


def test_a_replacement_front_end_that_finds_the_inference_process_gone_is_started_again_not_fatal(
        repository, tmp_path):
    with shared(repository, tmp_path) as (server, pids):
        (first,) = inference_pids(server)
        known = {*pids, first}
        os.kill(pids[0], signal.SIGKILL)
        # The replacement is held before it can connect, the inference process dies, and the parent is held
        # until the replacement has failed: it then sees a front end that never served, which alone would
        # stop the service.
        (replacement,) = wait_for(lambda: [p for p in map(int, STARTED.findall(server.output())) if p not in known],
                                  "a replacement front end", server)
        os.kill(replacement, signal.SIGSTOP)
        server.process.send_signal(signal.SIGSTOP)
        os.kill(first, signal.SIGKILL)
        os.kill(replacement, signal.SIGCONT)
        wait_for(lambda: psutil.Process(replacement).status() == psutil.STATUS_ZOMBIE,  # exited, not yet reaped
                 "the replacement to fail", server)
        server.process.send_signal(signal.SIGCONT)
        wait_for(lambda: len(inference_pids(server)) == 2, "a new inference process", server)
        (serving,) = wait_for(lambda: [p for p in serving_pids(server) if p not in known], "a new front end",
                              server)
        assert serving != replacement and "stopping the others" not in server.output()
        assert f"(pid {replacement}) could not start while the inference process was down" in server.output()
        for (connection,) in connections_on_each_worker(server, [serving, pids[1]], per_worker=1).values():
            wait_for(lambda: request(connection, "GET", "/v2/health/ready")[0] == 200,  # noqa: B023
                     "the front end ready", server)
            assert request(connection, "POST", "/predict?category=sarees", image_bytes())[0] == 200


def test_an_inference_process_that_cannot_load_stops_the_service_with_its_message(tmp_path):
    build_repository(tmp_path, slugs=("kurtis",))
    (tmp_path / "kurtis" / "1" / "model.onnx").write_bytes(b"replaced")
    failed = start(tmp_path, tmp_path, SHARED, wait_ready=False, log_level="info")
    assert failed.process.wait(timeout=60) == 1
    output = failed.output()
    assert "error: cannot serve: kurtis:" in output and "failed to start (exit code 1)" in output
    assert "worker 0 started" not in output  # no front end was started


def test_one_worker_with_shared_inference_is_refused(repository, tmp_path):
    failed = start(repository, tmp_path, {"CATALOG_SERVICE_SHARED_INFERENCE": "true"}, wait_ready=False)
    assert failed.process.wait(timeout=60) == 2
    assert "shared_inference=True needs workers > 1" in failed.output()




def shared_memory_of(pid: int) -> set[str]:
    """The shared-memory segments (under /dev/shm) process ``pid`` has mapped."""
    with open(f"/proc/{pid}/maps") as maps:
        return {line.split(maxsplit=5)[5].strip() for line in maps if " /dev/shm/" in line}


def test_a_killed_front_ends_shared_memory_is_removed_when_it_is_replaced(repository, tmp_path):
    with shared(repository, tmp_path) as (server, pids):
        killed = shared_memory_of(pids[0])
        assert killed and all(os.path.exists(path) for path in killed)
        os.kill(pids[0], signal.SIGKILL)
        (replacement,) = wait_for(lambda: [p for p in serving_pids(server) if p not in pids], "a new front end",
                                  server)
        assert not [path for path in killed if os.path.exists(path)]  # each replacement would leak a set
        kept = shared_memory_of(replacement) | shared_memory_of(pids[1])
    assert not [path for path in kept if os.path.exists(path)]  # and a normal stop leaves none


def test_a_restarted_inference_process_serves_the_versions_the_front_ends_run(tmp_path):
    repository = build_repository(tmp_path / "repo", slugs=("sarees",))
    with shared(repository, tmp_path) as (server, _pids), httpx.Client(timeout=30) as client:
        (first,) = inference_pids(server)
        write_version(repository, "sarees", 2, 32, seed=2)  # published while it serves
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: [p for p in inference_pids(server) if p != first], "a new inference process", server)
        for _ in range(4):  # through either front end
            wait_for(lambda: client.get(f"{server.url}/v2/health/ready").status_code == 200, "ready", server)
            answer = client.post(f"{server.url}/predict", params={"category": "sarees"}, content=image_bytes(),
                                 headers={"Content-Type": "image/jpeg"})
            assert answer.status_code == 200, answer.text  # not 503 'restart the service' for good
        assert "loaded sarees v2" not in server.output()
