"""The real thing: ``python -m service`` in a subprocess (uvicorn on a free port) over a tiny ONNX
repository, driven with real multipart requests over HTTP."""

from __future__ import annotations

import base64
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from benchmarks.onnx_factory import build_repository
from tests.live_server import Server, start, stop
from tests.service.fakes import image_bytes


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repo"), slugs=("men_tshirts", "sarees"))


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory) -> Iterator[Server]:
    running = start(repository, tmp_path_factory.mktemp("logs"), {"CATALOG_SERVICE_MAX_QUEUE_DELAY_S": "0.02"})
    yield running
    assert stop(running) == 0


def test_predict_over_http_with_declared_conflicts(server):
    response = httpx.post(f"{server.url}/predict", files={"image": ("shirt.jpg", image_bytes())},
                          data={"category": "men_tshirts", "threshold": "0",
                                "declared": '{"sleeve_length": "short sleeves"}'}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "men_tshirts" and body["model_version"] == 1
    predicted = body["attributes"]["sleeve_length"]["value"]
    assert predicted in ("short sleeves", "long sleeves")
    assert body["row"]["attr_5"] == predicted
    conflict = predicted != "short sleeves" and body["attributes"]["sleeve_length"]["confidence"] >= 0.8
    assert bool(body["conflicts"]) == conflict


def test_bare_jpeg_body_over_http_matches_the_multipart_answer(server):
    data = image_bytes()
    bare = httpx.post(f"{server.url}/predict", params={"category": "men_tshirts"}, content=data,
                      headers={"Content-Type": "image/jpeg"}, timeout=10)
    form = httpx.post(f"{server.url}/predict", files={"image": ("shirt.jpg", data)},
                      data={"category": "men_tshirts"}, timeout=10)
    assert bare.status_code == form.status_code == 200, (bare.text, form.text)
    assert bare.json()["attributes"] == form.json()["attributes"]
    assert bare.headers["content-type"] == "application/json"


def test_concurrent_requests_are_batched_and_bad_images_stay_isolated(server):
    def post(i: int) -> httpx.Response:
        data = b"broken" if i == 3 else image_bytes(color=(i * 20, 50, 90))
        return httpx.post(f"{server.url}/predict", files={"image": (f"{i}.jpg", data)},
                          data={"category": "sarees"}, timeout=10)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    assert [r.status_code for r in responses] == [200, 200, 200, 422, 200, 200, 200, 200]
    assert max(r.json()["timings"]["batch_size"] for r in responses if r.status_code == 200) > 1
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'catalog_images_processed_total{model="sarees"} 7.0' in metrics


def test_batch_and_open_inference_protocol_over_http(server):
    files = [("images", ("a.jpg", image_bytes())), ("images", ("b.png", image_bytes("PNG")))]
    batch = httpx.post(f"{server.url}/batch", files=files,
                       data={"categories": ["men_tshirts", "sarees"], "ids": ["a", "b"]}, timeout=10)
    assert [(i["id"], i["status"], i["result"]["model"]) for i in batch.json()["items"]] == [
        ("a", 200, "men_tshirts"), ("b", 200, "sarees")]
    encoded = base64.b64encode(image_bytes()).decode()
    infer = httpx.post(f"{server.url}/v2/models/sarees/infer", timeout=10, json={
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}]})
    assert infer.status_code == 200 and len(infer.json()["outputs"]) == 2 * 10  # value and confidence
    assert httpx.get(f"{server.url}/v2/models/sarees/ready").json() == {"ready": True}


def test_sigterm_lets_queued_requests_finish_then_exits_0(repository, tmp_path):
    # A long batching delay keeps four requests queued while the signal arrives.
    running = start(repository, tmp_path,
                    {"CATALOG_SERVICE_MAX_QUEUE_DELAY_S": "1.5", "CATALOG_SERVICE_MAX_BATCH_SIZE": "8"})
    pool = ThreadPoolExecutor(4)
    queued = [pool.submit(lambda: httpx.post(f"{running.url}/predict", files={"image": ("x.jpg", image_bytes())},
                                             data={"category": "men_tshirts"}, timeout=20)) for _ in range(4)]
    deadline = time.monotonic() + 10
    while 'catalog_queue_depth{model="men_tshirts"} 4.0' not in httpx.get(f"{running.url}/metrics").text:
        assert time.monotonic() < deadline, "requests never queued"
        time.sleep(0.02)
    running.process.send_signal(signal.SIGTERM)
    assert [f.result().status_code for f in queued] == [200] * 4
    assert {f.result().json()["timings"]["batch_size"] for f in queued} == {4}
    assert running.process.wait(timeout=30) == 0
    with pytest.raises(httpx.TransportError):  # no longer listening
        httpx.get(f"{running.url}/v2/health/live", timeout=2)


def test_broken_model_stops_start_up_with_a_clear_message(tmp_path):
    build_repository(tmp_path, slugs=("kurtis",))
    (tmp_path / "kurtis" / "1" / "model.onnx").write_bytes(b"replaced")
    failed = start(tmp_path, tmp_path, wait_ready=False)
    assert failed.process.wait(timeout=30) == 1
    output = failed.output()
    assert "error: cannot serve: kurtis:" in output and "does not match the manifest's" in output


def test_bad_setting_is_named_and_exits_2(tmp_path):
    failed = start(tmp_path, tmp_path, {"CATALOG_SERVICE_MAX_BATCH_SIZE": "0"}, wait_ready=False)
    assert failed.process.wait(timeout=30) == 2
    assert "invalid setting max_batch_size" in failed.output()
