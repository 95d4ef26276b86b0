"""``service/direct_route.py``: ``POST /predict`` past FastAPI's routing answers exactly as FastAPI's way
does (same statuses, bodies, headers, handlers and metrics), and only that request takes it."""

from __future__ import annotations

import pytest
from fastapi import APIRouter

from service.app import create_app
from service.batching import QueueFullError
from service.direct_route import find_route
from service.settings import Settings
from tests.service.fakes import FakePredictor, image_bytes
from tests.service.inprocess import serve

pytestmark = pytest.mark.anyio
JPEG = image_bytes()
MULTIPART = {"files": {"image": ("x.jpg", JPEG)}, "data": {"category": "men_tshirts"}}
REQUESTS = {
    "form": ("/predict", MULTIPART),
    "bare body": ("/predict?category=men_tshirts", {"content": JPEG, "headers": {"Content-Type": "image/jpeg"}}),
    "wrong media type": ("/predict", {"content": b"{}", "headers": {"Content-Type": "application/json"}}),
    "no category": ("/predict", {"content": JPEG, "headers": {"Content-Type": "image/jpeg"}}),
    "unknown category": ("/predict?category=nope", {"content": JPEG, "headers": {"Content-Type": "image/jpeg"}}),
    "not an image": ("/predict?category=men_tshirts", {"content": b"abc", "headers": {"Content-Type": "image/jpeg"}}),
    "body over the cap": ("/predict?category=men_tshirts",
                          {"content": b"x", "headers": {"Content-Type": "image/jpeg", "Content-Length": "9" * 12}}),
}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def comparable(response) -> tuple[int, dict, object]:
    body = response.json() if response.content else None
    if isinstance(body, dict):
        body.pop("timings", None)
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length")}
    return response.status_code, headers, body


async def answers(client, direct: bool) -> dict[str, tuple[int, dict, object]]:
    if not direct:
        client.app.direct = None  # FastAPI's way for every request
    return {name: comparable(await client.post(path, **kwargs)) for name, (path, kwargs) in REQUESTS.items()}


async def test_the_direct_route_answers_every_request_as_fastapis_way_does(tmp_path):
    async with serve(tmp_path) as direct, serve(tmp_path) as routed:
        assert direct.app.direct is not None
        ours, theirs = await answers(direct, True), await answers(routed, False)
    assert ours == theirs
    statuses = {name: answer[0] for name, answer in ours.items()}
    assert statuses == {"form": 200, "bare body": 200, "wrong media type": 415, "no category": 422,
                        "unknown category": 422, "not an image": 422, "body over the cap": 413}


async def test_direct_requests_are_timed_counted_and_carry_their_request_id(tmp_path):
    predictor = FakePredictor()
    async with serve(tmp_path, predictor) as client:
        given = await client.post("/predict", headers={"X-Request-ID": "trace-7"}, **MULTIPART)
        predictor.error = QueueFullError("men_tshirts", 256, 2.6)
        refused = await client.post("/predict", **MULTIPART)
        metrics = (await client.get("/metrics")).text
    assert given.headers["x-request-id"] == "trace-7" and len(refused.headers["x-request-id"]) == 32
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
    assert 'catalog_http_request_duration_seconds_count{method="POST",route="/predict",status="200"} 1.0' in metrics
    assert 'catalog_http_request_duration_seconds_count{method="POST",route="/predict",status="503"} 1.0' in metrics
    assert 'catalog_rejections_total{reason="queue_full"} 1.0' in metrics


async def test_an_unexpected_error_on_the_direct_route_is_a_bare_500_that_closes_the_connection(tmp_path):
    predictor = FakePredictor()
    predictor.error = RuntimeError("secret detail")
    async with serve(tmp_path, predictor) as client:
        response = await client.post("/predict", **MULTIPART)
    assert response.status_code == 500 and response.headers["connection"] == "close"
    assert response.json()["code"] == "internal_error" and "secret" not in response.text


async def test_the_api_key_is_checked_and_cors_applied_on_the_direct_route(tmp_path):
    origin = {"Origin": "https://admin.example"}
    async with serve(tmp_path, api_key="s3cret-key", cors_origins="https://admin.example") as client:
        refused = await client.post("/predict", headers=origin, **MULTIPART)
        allowed = await client.post("/predict", headers={**origin, "X-API-Key": "s3cret-key"}, **MULTIPART)
    assert refused.status_code == 401 and allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://admin.example"


async def test_other_methods_and_paths_take_fastapis_way(tmp_path):
    async with serve(tmp_path) as client:
        wrong_method = await client.get("/predict")
        batch = await client.post("/batch", files=[("images", ("x.jpg", JPEG))], data={"categories": "men_tshirts"})
    assert wrong_method.status_code == 405 and batch.status_code == 200


def test_tracing_keeps_predict_on_fastapis_way_for_its_request_span(tmp_path):
    pytest.importorskip("opentelemetry")
    assert create_app(Settings(repository=tmp_path, tracing=True), FakePredictor()).direct is None
    assert create_app(Settings(repository=tmp_path), FakePredictor()).direct is not None


def test_a_missing_route_is_named():
    with pytest.raises(LookupError, match="POST /predict"):
        find_route(APIRouter(), "/predict", "POST")
