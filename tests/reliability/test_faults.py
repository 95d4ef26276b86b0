"""Faults: a missing or corrupt model file, or a manifest whose sha256 does not match, stops start-up
with a clear error (exit 1); an inference error in one batch fails only that batch's requests with a
500 that says so, and the service carries on.

The inference fault is a real ONNX Runtime error, not a hook: the model below gathers from a 2-element
tensor at ``floor(max(pixel_values))``, which is out of range only for a batch holding a (nearly) white
image, so a white upload is the marker that breaks its batch.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.onnx_factory import INPUT_NAME, build_model, build_repository, write_version
from catalog.manifest import MANIFEST_NAME, MODEL_NAME, sha256_file
from service.__main__ import main
from tests.live_server import start, stop
from tests.service.fakes import image_bytes

WHITE = image_bytes(color=(255, 255, 255))
RED = image_bytes(color=(200, 30, 30))


def failing_on_white(slug: str) -> onnx.ModelProto:
    model = build_model(slug)
    graph = model.graph
    first = graph.output[0].name
    producer = next(node for node in graph.node if first in node.output)
    producer.output[0] = f"{first}_raw"
    graph.initializer.extend([numpy_helper.from_array(np.zeros(2, np.float32), "two"),
                              numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    graph.node.extend([
        helper.make_node("ReduceMax", [INPUT_NAME], ["peak"], keepdims=0),
        helper.make_node("Floor", ["peak"], ["peak_floor"]),
        helper.make_node("Cast", ["peak_floor"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["two", "index"], ["picked"]),  # fails when index >= 2
        helper.make_node("Mul", ["picked", "zero"], ["nothing"]),
        helper.make_node("Add", [f"{first}_raw", "nothing"], [first]),
    ])
    onnx.checker.check_model(model)
    return model


def replace_model(folder: Path, model_bytes: bytes, update_sha: bool) -> None:
    (folder / MODEL_NAME).write_bytes(model_bytes)
    if update_sha:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        manifest["sha256"] = sha256_file(folder / MODEL_NAME)
        (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.fixture()
def clean_env(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("CATALOG_SERVICE_")]:
        monkeypatch.delenv(key)


def start_up_error(repository: Path, capsys) -> str:
    assert main(["--repository", str(repository), "--port", "0"]) == 1
    return capsys.readouterr().err


def test_missing_model_file_is_a_clear_start_up_error(tmp_path, capsys, clean_env):
    build_repository(tmp_path)
    (tmp_path / "men_tshirts" / "1" / MODEL_NAME).unlink()
    err = start_up_error(tmp_path, capsys)
    assert "error: cannot serve: men_tshirts:" in err and MODEL_NAME in err, err


def test_corrupt_model_file_with_a_matching_checksum_is_a_clear_start_up_error(tmp_path, capsys, clean_env):
    build_repository(tmp_path)
    replace_model(tmp_path / "men_tshirts" / "1", b"\x08\x07garbage-not-an-onnx-model" * 10, update_sha=True)
    err = start_up_error(tmp_path, capsys)
    assert "error: cannot serve: men_tshirts:" in err and "Traceback" not in err, err


def test_manifest_sha256_mismatch_is_a_clear_start_up_error(tmp_path, capsys, clean_env):
    build_repository(tmp_path)
    manifest_path = tmp_path / "men_tshirts" / "1" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    err = start_up_error(tmp_path, capsys)
    assert "error: cannot serve: men_tshirts:" in err and "does not match the manifest's" in err, err


def test_missing_manifest_is_a_clear_start_up_error(tmp_path, capsys, clean_env):
    build_repository(tmp_path)
    (tmp_path / "men_tshirts" / "1" / MANIFEST_NAME).unlink()
    err = start_up_error(tmp_path, capsys)
    assert "error: cannot serve:" in err, err


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    folder = write_version(root, "men_tshirts")
    replace_model(folder, failing_on_white("men_tshirts").SerializeToString(), update_sha=True)
    server = start(root, tmp_path_factory.mktemp("faulty-logs"), {
        "CATALOG_SERVICE_MAX_BATCH_SIZE": "2", "CATALOG_SERVICE_MAX_QUEUE_DELAY_S": "0.05"})
    yield server
    assert stop(server) == 0, server.output()


def post(server, data: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", files={"image": ("x.jpg", data)}, data={"category": "men_tshirts"},
                      timeout=20)


def test_inference_error_fails_its_batch_with_a_500_that_says_so(faulty_server):
    assert post(faulty_server, RED).status_code == 200
    failed = post(faulty_server, WHITE)
    assert failed.status_code == 500
    body = failed.json()
    assert body["code"] == "inference_failed" and "inference failed" in body["error"], body
    assert "Traceback" not in failed.text and "onnxruntime" not in failed.text.lower()
    # The service carries on.
    assert post(faulty_server, RED).status_code == 200
    assert faulty_server.ready()
    assert "inference failed for a batch" in faulty_server.output()  # the details are logged


def test_inference_error_fails_only_the_requests_in_the_same_batch(faulty_server):
    uploads = [RED] * 4 + [WHITE] + [RED] * 5
    with ThreadPoolExecutor(len(uploads)) as pool:
        responses = list(pool.map(lambda data: post(faulty_server, data), uploads))
    statuses = [r.status_code for r in responses]
    assert statuses[4] == 500, statuses
    failed = [r for r in responses if r.status_code != 200]
    assert all(r.status_code == 500 and r.json()["code"] == "inference_failed" for r in failed), statuses
    assert len(failed) <= 2, statuses  # max_batch_size: only the marker's batch
    assert faulty_server.alive() and faulty_server.ready()
