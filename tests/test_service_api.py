"""The HTTP API in-process (httpx.AsyncClient over ASGITransport) with a fake predictor."""

from __future__ import annotations

import base64
import json

import pytest

from service.batching import DeadlineExceededError, QueueFullError
from tests.service.fakes import FakePredictor, image_bytes
from tests.service.inprocess import serve

pytestmark = pytest.mark.anyio
JPEG = image_bytes()


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def predict(client, data=JPEG, category="men_tshirts", filename="x.jpg", **form):
    fields = {"category": category, **{k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in form.items()}}
    return await client.post("/predict", files={"image": (filename, data)}, data=fields)


async def test_predict_returns_attributes_row_abstention_and_timings(tmp_path):
    async with serve(tmp_path) as client:
        response = await predict(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "men_tshirts" and body["model_version"] == 3 and body["category"] == "Men Tshirts"
    sleeves = body["attributes"]["sleeve_length"]
    assert sleeves["value"] == "short sleeves" and sleeves["confidence"] > 0.95 and not sleeves["abstained"]
    assert [alt["value"] for alt in sleeves["top_k"]] == ["short sleeves", "long sleeves"]
    color = body["attributes"]["color"]
    assert color["value"] is None and color["abstained"] and color["decoded_value"] == "default"
    assert body["row"]["attr_5"] == "short sleeves" and body["row"]["attr_1"] == "default"
    assert body["row"]["attr_6"] == "dummy" and list(body["row"]) == [f"attr_{i}" for i in range(1, 11)]
    assert body["timings"]["batch_size"] == 1 and body["timings"]["total_ms"] >= body["timings"]["preprocess_ms"]
    assert client.predictor.calls == [("men_tshirts", (3, 32, 32))]


async def test_threshold_is_overridable_per_request_and_validated(tmp_path):
    async with serve(tmp_path) as client:
        low = await predict(client, threshold=0)
        bad = await predict(client, threshold=1.5)
    assert low.json()["attributes"]["color"]["value"] == "default"
    assert bad.status_code == 422 and "threshold" in bad.json()["error"]


async def test_display_name_works_and_unknown_category_lists_valid_ones(tmp_path):
    async with serve(tmp_path) as client:
        by_name = await predict(client, category="Men Tshirts")
        unknown = await predict(client, category="jeans")
    assert by_name.status_code == 200
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_category" and "'men_tshirts' (Men Tshirts)" in unknown.json()["error"]


async def test_confident_contradiction_of_declared_value_is_a_conflict(tmp_path):
    declared = {"sleeve_length": "long sleeves", "attr_2": "polo", "color": "black"}
    async with serve(tmp_path) as client:
        body = (await predict(client, declared=declared)).json()
    # Sleeves contradict confidently; neck agrees; colour disagrees but the image is unsure.
    assert body["conflicts"] == [{"attribute": "sleeve_length", "column": "attr_5", "declared": "long sleeves",
                                  "predicted": "short sleeves", "confidence": pytest.approx(0.982, abs=1e-3)}]


async def test_declared_values_outside_taxonomy_are_named_in_a_422(tmp_path):
    async with serve(tmp_path) as client:
        bad_value = await predict(client, declared={"sleeve_length": "long", "fabric": "silk"})
        not_json = await predict(client, declared="{nope")
    assert bad_value.status_code == 422 and bad_value.json()["code"] == "invalid_declared"
    assert "'long'" in bad_value.json()["error"] and "'fabric'" in bad_value.json()["error"]
    assert not_json.status_code == 422 and "JSON" in not_json.json()["error"]
    assert client.predictor.calls == []  # rejected before any model work


@pytest.mark.parametrize(
    ("fmt", "mode", "extra"),
    [("PNG", "RGBA", {}), ("PNG", "P", {}), ("GIF", "P", {}), ("WEBP", "RGB", {}), ("BMP", "RGB", {}),
     ("TIFF", "CMYK", {}), ("PNG", "L", {}), ("JPEG", "RGB", {"quality": 50})],
)
async def test_allowed_formats_and_modes_are_accepted(tmp_path, fmt, mode, extra):
    color = (10, 20, 30, 40) if mode in ("RGBA", "CMYK") else (1, 2, 3)
    if mode == "P":
        color = (5,)
    async with serve(tmp_path) as client:
        response = await predict(client, data=image_bytes(fmt, mode, color=color, **extra))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("data", "status", "code", "message"),
    [
        (image_bytes("EPS"), 415, "unsupported_media_type", "format EPS is not accepted"),
        (JPEG[: len(JPEG) // 2], 422, "invalid_image", "runcated"),
        (b"plain text, not a picture", 422, "invalid_image", "not an image"),
        (b"", 422, "invalid_image", "empty"),
        (image_bytes(size=(400, 400)), 413, "payload_too_large", "pixels"),
    ],
)
async def test_bad_images_get_the_right_status_with_a_reason(tmp_path, data, status, code, message):
    async with serve(tmp_path, max_image_pixels=100_000) as client:
        response = await predict(client, data=data)
    assert response.status_code == status
    assert response.json()["code"] == code and message in response.json()["error"]


async def test_upload_byte_limits_give_413(tmp_path):
    big = image_bytes("PNG", size=(200, 200), color=(1, 2, 3), compress_level=0)
    async with serve(tmp_path, max_upload_bytes=4096, max_batch_items=2) as client:
        per_image = await predict(client, data=big + b"")
        whole_body = await client.post("/predict", files={"image": ("x.png", b"0" * 20_000_000)},
                                       data={"category": "men_tshirts"})
    assert per_image.status_code == 413 and "limit is 4096" in per_image.json()["error"]
    assert whole_body.status_code == 413


async def test_batch_keeps_input_order_and_isolates_bad_items(tmp_path):
    files = [("images", ("a.jpg", JPEG)), ("images", ("b.txt", b"junk")), ("images", ("c.png", image_bytes("PNG")))]
    data = {"categories": ["men_tshirts", "men_tshirts", "Men Tshirts"], "ids": ["a", "b", "c"]}
    async with serve(tmp_path) as client:
        response = await client.post("/batch", files=files, data=data)
    items = response.json()["items"]
    assert response.status_code == 200
    assert [(i["index"], i["id"], i["status"]) for i in items] == [(0, "a", 200), (1, "b", 422), (2, "c", 200)]
    assert items[1]["error"]["code"] == "invalid_image" and items[0]["result"]["row"]["attr_5"] == "short sleeves"


async def test_batch_item_limit_and_category_count_are_checked(tmp_path):
    files = [("images", (f"{i}.jpg", JPEG)) for i in range(3)]
    async with serve(tmp_path, max_batch_items=2) as client:
        too_many = await client.post("/batch", files=files, data={"categories": "men_tshirts"})
        mismatch = await client.post("/batch", files=files[:2],
                                     data={"categories": ["men_tshirts", "men_tshirts", "men_tshirts"]})
    assert too_many.status_code == 413 and "limit is 2" in too_many.json()["error"]
    assert mismatch.status_code == 422 and "3 categories for 2 images" in mismatch.json()["error"]


async def test_open_inference_protocol_health_metadata_and_infer(tmp_path):
    async with serve(tmp_path) as client:
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}
        assert (await client.get("/v2/models/men_tshirts/ready")).status_code == 200
        meta = (await client.get("/v2/models/men_tshirts")).json()
        request = {"id": "r1", "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                           "data": [base64.b64encode(JPEG).decode()] * 2}],
                   "parameters": {"threshold": 0.5}}
        infer = await client.post("/v2/models/men_tshirts/infer", json=request)
        missing = await client.get("/v2/models/jeans")
        bad_b64 = await client.post("/v2/models/men_tshirts/infer", json={
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]})
    assert meta["name"] == "men_tshirts" and meta["versions"] == ["1", "3"]
    sleeves = next(o for o in meta["outputs"] if o["name"] == "sleeve_length")
    assert sleeves["parameters"]["values"] == ["short sleeves", "long sleeves"]
    assert meta["inputs"][0]["datatype"] == "BYTES"
    body = infer.json()
    assert infer.status_code == 200 and body["id"] == "r1" and body["model_version"] == "3"
    outputs = {o["name"]: o for o in body["outputs"]}
    attributes = ["color", "neck", "pattern", "print_or_pattern_type", "sleeve_length"]
    assert list(outputs) == [name for a in attributes for name in (a, f"{a}_confidence")]
    assert outputs["sleeve_length"]["data"] == ["short sleeves"] * 2 and outputs["color"]["data"] == ["", ""]
    assert outputs["color_confidence"]["datatype"] == "FP32" and outputs["color_confidence"]["data"][0] < 0.5
    # Parameters hold scalars only, as the protocol says.
    assert all(not isinstance(v, list | dict) for o in body["outputs"] for v in o.get("parameters", {}).values())
    assert missing.status_code == 404
    assert bad_b64.status_code == 422 and "base64" in bad_b64.json()["error"]


async def test_models_list_and_partial_start_reports_broken_model(tmp_path):
    predictor = FakePredictor(slugs=("men_tshirts",), broken=("sarees",))
    async with serve(tmp_path, predictor) as client:
        models = (await client.get("/models")).json()["models"]
        ready = await client.get("/v2/health/ready")
        broken_ready = await client.get("/v2/models/sarees/ready")
        broken_predict = await predict(client, category="sarees")
        healthy = await predict(client)
    assert [(m["name"], m["ready"]) for m in models] == [("men_tshirts", True), ("sarees", False)]
    assert ready.status_code == 200 and broken_ready.status_code == 503
    assert broken_predict.status_code == 503 and "sha256 mismatch" in broken_predict.json()["error"]
    assert healthy.status_code == 200


async def test_api_key_guards_prediction_routes_only(tmp_path):
    async with serve(tmp_path, api_key="s3cret-key") as client:
        none = await predict(client)
        wrong = await client.post("/predict", files={"image": ("x.jpg", JPEG)}, data={"category": "men_tshirts"},
                                  headers={"X-API-Key": "s3cret-kez"})
        header = await client.post("/predict", files={"image": ("x.jpg", JPEG)}, data={"category": "men_tshirts"},
                                   headers={"X-API-Key": "s3cret-key"})
        bearer = await client.post("/v2/models/men_tshirts/infer", headers={"Authorization": "Bearer s3cret-key"},
                                   json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                     "data": [base64.b64encode(JPEG).decode()]}]})
        open_routes = [await client.get(p) for p in ("/v2/health/ready", "/v2/health/live", "/metrics",
                                                      "/v2/models/men_tshirts")]
    assert none.status_code == 401 and wrong.status_code == 401
    assert header.status_code == 200 and bearer.status_code == 200
    assert all(r.status_code == 200 for r in open_routes)


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [(QueueFullError("men_tshirts", 256, 2.6), 503, "3"), (DeadlineExceededError("late"), 504, None)],
)
async def test_overload_errors_map_to_503_with_retry_after_and_504(tmp_path, error, status, retry_after):
    predictor = FakePredictor()
    predictor.error = error
    async with serve(tmp_path, predictor) as client:
        response = await predict(client)
        metrics = (await client.get("/metrics")).text
    assert response.status_code == status and response.headers.get("retry-after") == retry_after
    assert f'catalog_rejections_total{{reason="{response.json()["code"]}"}} 1.0' in metrics


async def test_draining_turns_readiness_503_and_refuses_new_work(tmp_path):
    async with serve(tmp_path) as client:
        client.app.state.service.begin_drain()
        ready = await client.get("/v2/health/ready")
        refused = await predict(client)
        live = await client.get("/v2/health/live")
    assert ready.status_code == 503 and ready.json() == {"ready": False}
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert live.status_code == 200
    assert client.predictor.stopped  # the lifespan's shutdown stopped the predictor


async def test_metrics_count_requests_predictions_abstentions_and_conflicts(tmp_path):
    async with serve(tmp_path) as client:
        await predict(client, declared={"sleeve_length": "long sleeves"})
        text = (await client.get("/metrics")).text
    assert 'catalog_http_request_duration_seconds_count{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'catalog_predictions_total{attribute="sleeve_length",model="men_tshirts",value="short sleeves"} 1.0' in text
    assert 'catalog_abstentions_total{attribute="color",model="men_tshirts"} 1.0' in text
    assert 'catalog_conflicts_total{attribute="sleeve_length",model="men_tshirts"} 1.0' in text
    assert 'catalog_preprocess_duration_seconds_count{model="men_tshirts"} 1.0' in text


async def test_open_inference_protocol_infer_counts_predictions_and_abstentions_too(tmp_path):
    request = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                           "data": [base64.b64encode(JPEG).decode()] * 2}]}
    async with serve(tmp_path) as client:
        assert (await client.post("/v2/models/men_tshirts/infer", json=request)).status_code == 200
        text = (await client.get("/metrics")).text
    assert 'catalog_predictions_total{attribute="sleeve_length",model="men_tshirts",value="short sleeves"} 2.0' in text
    assert 'catalog_abstentions_total{attribute="color",model="men_tshirts"} 2.0' in text


async def test_openapi_docs_are_served(tmp_path):
    async with serve(tmp_path) as client:
        docs = await client.get("/docs")
        schema = (await client.get("/openapi.json")).json()
    assert docs.status_code == 200
    assert {"/predict", "/batch", "/v2/models/{name}/infer", "/v2/health/ready"} <= set(schema["paths"])
