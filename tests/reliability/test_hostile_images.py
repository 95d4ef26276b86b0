"""Every file in the image zoo gets a prediction or a 4xx JSON error with a reason, over real HTTP:
never a 5xx, never a dead worker, and the service stays ready throughout."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.image_zoo import specimens
from tests.reliability.servers import UPLOAD_LIMIT

ZOO = list(specimens(UPLOAD_LIMIT))


def check(specimen, response: httpx.Response) -> None:
    status = response.status_code
    assert status < 500, f"{specimen.name}: {status} {response.text[:300]}"
    body = response.json()
    if specimen.expected == "ok":
        assert status == 200, f"{specimen.name}: {status} {body}"
        assert body["attributes"], specimen.name
    elif specimen.expected == "any4xx":
        assert status == 200 or 400 <= status < 500, f"{specimen.name}: {status}"
    else:
        assert str(status) == specimen.expected, f"{specimen.name}: {status} {body}"
    if status != 200:
        assert set(body) == {"error", "code"} and len(body["error"]) > 10, body
        assert "Traceback" not in body["error"]


@pytest.mark.parametrize("specimen", ZOO, ids=[s.name for s in ZOO])
def test_every_zoo_image_gets_a_prediction_or_a_4xx_reason(server, specimen):
    response = httpx.post(f"{server.url}/predict", timeout=30, data={"category": "men_tshirts"},
                          files={"image": (specimen.name, specimen.data, specimen.content_type)})
    check(specimen, response)
    assert server.alive()


def test_the_zoo_in_one_batch_fails_only_the_bad_items(server):
    chosen = [s for s in ZOO if s.name in ("baseline.jpg", "zero-bytes.jpg", "bomb-png-100000x100000.png",
                                           "png-16bit-rgb.png", "ico.ico", "truncated.jpg")]
    files = [("images", (s.name, s.data, s.content_type)) for s in chosen]
    response = httpx.post(f"{server.url}/batch", files=files, data={"categories": "sarees"}, timeout=30)
    assert response.status_code == 200, response.text
    statuses = {s.name: item["status"] for s, item in zip(chosen, response.json()["items"], strict=True)}
    assert statuses == {"baseline.jpg": 200, "zero-bytes.jpg": 422, "bomb-png-100000x100000.png": 413,
                        "png-16bit-rgb.png": 200, "ico.ico": 415, "truncated.jpg": 422}


def test_the_zoo_over_the_open_inference_protocol(server):
    for specimen in ZOO:
        if len(specimen.data) > UPLOAD_LIMIT:
            continue
        encoded = base64.b64encode(specimen.data).decode()
        response = httpx.post(f"{server.url}/v2/models/men_tshirts/infer", timeout=30, json={
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}]})
        assert response.status_code < 500, (specimen.name, response.text)
        if specimen.expected == "ok":
            assert response.status_code == 200, (specimen.name, response.text)


def test_service_is_ready_and_its_workers_alive_after_the_zoo(server):
    # Runs after the zoo (file order): same process, still ready, still predicting.
    assert server.alive() and server.ready()
    ok = httpx.post(f"{server.url}/predict", files={"image": ("a.jpg", ZOO[0].data)},
                    data={"category": "men_tshirts"}, timeout=10)
    assert ok.status_code == 200
