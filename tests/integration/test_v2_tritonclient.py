"""The v2 routes with the standard client, ``tritonclient.http``, against a real server: health,
metadata, the repository index and inference, as JSON and with the binary tensor extension (the
client's default), with answers equal to ``/predict``'s."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
import tritonclient.http as tritonclient_http

from benchmarks.onnx_factory import build_repository
from tests.image_zoo import _save, photo
from tests.live_server import start, stop

IMAGES = [_save(photo((120, 160), seed=seed), "JPEG") for seed in range(3)]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """``tritonclient``'s HTTP client on a real server, and the server's URL."""
    repository = build_repository(tmp_path_factory.mktemp("v2"), slugs=("men_tshirts", "sarees"))
    server = start(repository, tmp_path_factory.mktemp("v2-logs"))
    yield tritonclient_http.InferenceServerClient(server.url.removeprefix("http://")), server.url
    assert stop(server) == 0, server.output()


def predicted(url: str, image: bytes) -> dict[str, tuple[str | None, float]]:
    body = httpx.post(f"{url}/predict?category=men_tshirts", content=image,
                      headers={"Content-Type": "image/jpeg"}).json()
    return {name: (a["value"], a["confidence"]) for name, a in body["attributes"].items()}


def test_health_metadata_and_repository_index(client):
    triton, _ = client
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready("men_tshirts")
    assert triton.get_server_metadata()["name"] == "catalog-attributes"
    metadata = triton.get_model_metadata("men_tshirts")
    assert metadata["inputs"][0]["name"] == "image" and metadata["inputs"][0]["datatype"] == "BYTES"
    assert {"sleeve_length", "sleeve_length_confidence"} <= {o["name"] for o in metadata["outputs"]}
    index = triton.get_model_repository_index()
    assert sorted((m["name"], m["state"]) for m in index) == [("men_tshirts", "READY"), ("sarees", "READY")]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_predict(client, binary):
    triton, url = client
    tensor = tritonclient_http.InferInput("image", [len(IMAGES)], "BYTES")
    # In JSON the files travel base64-encoded; in the binary extension as they are.
    data = IMAGES if binary else [base64.b64encode(image) for image in IMAGES]
    tensor.set_data_from_numpy(np.array(data, dtype=object), binary_data=binary)
    outputs = [tritonclient_http.InferRequestedOutput(name, binary_data=binary)
               for name in ("sleeve_length", "sleeve_length_confidence", "color")]
    result = triton.infer("men_tshirts", [tensor], outputs=outputs, request_id="r-7",
                          parameters={"threshold": 0.0})
    values = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("sleeve_length")]
    confidences = result.as_numpy("sleeve_length_confidence")
    assert result.get_response()["id"] == "r-7" and confidences.dtype == np.float32
    for image, value, confidence in zip(IMAGES, values, confidences, strict=True):
        expected_value, expected_confidence = predicted(url, image)["sleeve_length"]
        assert value == expected_value and confidence == pytest.approx(expected_confidence, abs=1e-6)


def test_infer_with_every_output_by_default_and_no_content_type(client):
    triton, _ = client
    tensor = tritonclient_http.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(IMAGES[:1], dtype=object))
    result = triton.infer("sarees", [tensor])  # no outputs named: all of them, binary
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert len(names) == 20 and all(result.as_numpy(name).shape == (1,) for name in names)
