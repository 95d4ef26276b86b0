"""The PyTorch backend (``CATALOG_SERVICE_BACKEND=torch``) served end to end: a real ``python -m service``
over a tiny exported model, driven over HTTP, answering what ONNX Runtime answers within tolerance."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from catalog.manifest import MANIFEST_NAME
from tests.live_server import Server, start, stop
from tests.service.fakes import image_bytes
from tests.torch_repository import SLUG, tiny_checkpoint, torch_repository

TORCH = {"CATALOG_SERVICE_BACKEND": "torch"}
COLORS = [(200, 30, 30), (20, 180, 60), (240, 240, 240), (10, 10, 10), (90, 60, 200)]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    return torch_repository(tmp_path_factory.mktemp("torch"))


@pytest.fixture(scope="module")
def servers(built, tmp_path_factory) -> Iterator[tuple[Server, Server]]:
    logs = tmp_path_factory.mktemp("logs")
    onnx, torch_server = start(built[0], logs), start(built[0], logs, TORCH)
    yield onnx, torch_server
    assert stop(onnx) == 0 and stop(torch_server) == 0


def predict(server: Server, color: tuple[int, int, int]) -> dict:
    response = httpx.post(f"{server.url}/predict", files={"image": ("x.jpg", image_bytes(color=color))},
                          data={"category": SLUG, "threshold": "0"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_torch_backend_answers_what_onnx_runtime_answers_over_http(servers):
    onnx, torch_server = servers
    for color in COLORS:
        expected, got = predict(onnx, color), predict(torch_server, color)
        for name, attribute in expected["attributes"].items():
            assert got["attributes"][name]["value"] == attribute["value"], (color, name)
            assert got["attributes"][name]["confidence"] == pytest.approx(attribute["confidence"], abs=1e-4)
        ood, torch_ood = expected["out_of_distribution"], got["out_of_distribution"]
        assert torch_ood["score"] == pytest.approx(ood["score"], rel=1e-4)
        assert torch_ood["flagged"] == ood["flagged"]


def test_front_ends_of_one_torch_inference_process_answer_what_onnx_runtime_answers(built, servers, tmp_path):
    # The GPU machine has PyTorch and no onnxruntime-gpu: shared inference there runs the torch backend.
    shared = start(built[0], tmp_path, {**TORCH, "CATALOG_SERVICE_WORKERS": "2", "CATALOG_SERVICE_TORCH_DEVICE": "cpu",
                                        "CATALOG_SERVICE_SHARED_INFERENCE": "true"}, log_level="info")
    try:
        for color in COLORS[:3]:
            expected, got = predict(servers[0], color), predict(shared, color)
            for name, attribute in expected["attributes"].items():
                assert got["attributes"][name]["confidence"] == pytest.approx(attribute["confidence"], abs=1e-4)
        assert f'catalog_model_copies{{model="{SLUG}"}} 1.0' in httpx.get(f"{shared.url}/metrics").text
    finally:
        assert stop(shared) == 0, shared.output()
    assert "run by the inference process" in shared.output()


def test_torch_backend_reports_itself_in_the_model_list(servers):
    listed = {m["name"]: m for m in httpx.get(f"{servers[1].url}/models", timeout=10).json()["models"]}
    assert listed[SLUG]["provider"] == "torch-cpu" and listed[SLUG]["precision"] == "fp32"


def test_a_checkpoint_served_instead_of_the_program_answers_the_same(built, servers, tmp_path):
    repository, checkpoint = built
    pinned = {"CATALOG_SERVICE_TORCH_CHECKPOINTS": json.dumps({SLUG: str(checkpoint)})}
    server = start(repository, tmp_path, {**TORCH, **pinned})
    try:
        for color in COLORS[:2]:
            assert predict(server, color)["attributes"] == predict(servers[1], color)["attributes"]
    finally:
        assert stop(server) == 0


def refusal(repository: Path, tmp_path: Path, env: dict[str, str]) -> str:
    server = start(repository, tmp_path, {**TORCH, **env}, wait_ready=False)
    assert server.process.wait(timeout=120) == 1, server.output()
    return server.output()


def test_other_weights_than_the_recorded_outputs_are_refused_at_start_up(built, tmp_path):
    other = tiny_checkpoint(tmp_path / "other" / SLUG, seed=1)
    output = refusal(built[0], tmp_path, {"CATALOG_SERVICE_TORCH_CHECKPOINTS": json.dumps({SLUG: str(other)})})
    assert "cannot serve" in output and "does not reproduce the recorded outputs" in output


def test_a_version_without_a_program_or_reference_is_refused_naming_the_fix(built, tmp_path):
    copy = tmp_path / "repository"
    folder = copy / SLUG / "1"
    folder.mkdir(parents=True)
    for source in (built[0] / SLUG / "1").iterdir():
        (folder / source.name).write_bytes(source.read_bytes())
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps({k: v for k, v in manifest.items() if k != "torch_export"}))
    assert "re-export with --torch-export" in refusal(copy, tmp_path, {})
    manifest["verification"].pop("reference")
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert "records no reference outputs" in refusal(copy, tmp_path, {})


def test_gpu_decode_without_cuda_refuses_to_start_naming_why(built, tmp_path):
    assert "gpu_decode needs the torch backend on CUDA" in refusal(built[0], tmp_path,
                                                                   {"CATALOG_SERVICE_GPU_DECODE": "1"})
