"""Out-of-distribution answers through the API (in-process, fake predictor): the verdict in every response,
abstention on a flagged image, the request's override, the category check and its bound, v2 outputs, metrics."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from tests.service.fakes import FakePredictor, image_bytes
from tests.service.inprocess import serve

pytestmark = pytest.mark.anyio
JPEG = image_bytes()
# men_tshirts' fixed logits: sleeve_length "short sleeves" at > 0.95 (a confident answer a listing can contradict)
CONTRADICTION = {"sleeve_length": "long sleeves"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def fake(**ood):
    slugs = ("men_tshirts", "sarees", "kurtis", "women_tshirts")
    return FakePredictor(slugs=slugs, ood=ood)


async def predict(client, category="men_tshirts", **form):
    fields = {"category": category, **{k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in form.items()}}
    response = await client.post("/predict", files={"image": ("x.jpg", JPEG)}, data=fields)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_model_without_a_detector_reports_null_and_answers_as_before(tmp_path):
    async with serve(tmp_path, fake()) as client:
        body = await predict(client, declared=CONTRADICTION)
    assert body["out_of_distribution"] is None and body["category_check"] is None
    assert body["attributes"]["sleeve_length"]["value"] == "short sleeves" and len(body["conflicts"]) == 1


async def test_an_unflagged_image_answers_normally_with_its_score(tmp_path):
    async with serve(tmp_path, fake(men_tshirts=(30.0, 60.0))) as client:
        body = await predict(client, declared=CONTRADICTION)
    assert body["out_of_distribution"] == {"score": 30.0, "threshold": 60.0, "flagged": False}
    assert body["attributes"]["sleeve_length"]["value"] == "short sleeves" and len(body["conflicts"]) == 1
    assert body["category_check"] is None
    assert [name for name, _ in client.predictor.calls] == ["men_tshirts"]


async def test_a_flagged_image_abstains_everywhere_keeps_the_row_and_raises_no_conflict(tmp_path):
    async with serve(tmp_path, fake(men_tshirts=(90.0, 60.0))) as client:
        body = await predict(client, declared=CONTRADICTION)
    assert body["out_of_distribution"] == {"score": 90.0, "threshold": 60.0, "flagged": True}
    for result in body["attributes"].values():
        assert result["value"] is None and result["abstained"] and result["top_k"]
    assert body["attributes"]["sleeve_length"]["decoded_value"] == "short sleeves"
    assert body["row"]["attr_5"] == "short sleeves"
    assert body["conflicts"] == []


async def test_a_request_can_keep_the_predictions_of_a_flagged_image(tmp_path):
    async with serve(tmp_path, fake(men_tshirts=(90.0, 60.0))) as client:
        body = await predict(client, declared=CONTRADICTION, ood="keep")
        bad = await client.post("/predict", files={"image": ("x.jpg", JPEG)}, data={"category": "men_tshirts",
                                                                                      "ood": "ignore"})
    assert body["out_of_distribution"]["flagged"] and body["attributes"]["sleeve_length"]["value"] == "short sleeves"
    assert len(body["conflicts"]) == 1
    assert bad.status_code == 422 and "ood must be one of abstain, keep" in bad.json()["error"]


async def test_the_server_default_can_keep_predictions(tmp_path):
    async with serve(tmp_path, fake(men_tshirts=(90.0, 60.0)), ood_action="keep") as client:
        kept = await predict(client)
        withheld = await predict(client, ood="abstain")
    assert kept["attributes"]["sleeve_length"]["value"] == "short sleeves"
    assert withheld["attributes"]["sleeve_length"]["value"] is None


async def test_a_flagged_image_is_scored_once_by_every_other_model_with_a_detector(tmp_path):
    predictor = fake(men_tshirts=(90.0, 60.0), sarees=(30.0, 60.0), kurtis=(80.0, 40.0))
    async with serve(tmp_path, predictor) as client:
        body = await predict(client)
    check = body["category_check"]
    assert check == {"asked": "men_tshirts", "best_fit": "sarees",
                     "scores": {"men_tshirts": 1.5, "sarees": 0.5, "kurtis": 2.0}}
    called = sorted(name for name, _ in predictor.calls)
    assert called == ["kurtis", "men_tshirts", "sarees"]  # women_tshirts has no detector: not run


async def test_no_best_fit_when_every_model_flags_the_image(tmp_path):
    async with serve(tmp_path, fake(men_tshirts=(90.0, 60.0), sarees=(70.0, 60.0))) as client:
        body = await predict(client)
    assert body["category_check"]["best_fit"] is None


async def test_category_check_always_and_off(tmp_path):
    scores = {"men_tshirts": (30.0, 60.0), "sarees": (10.0, 60.0)}
    async with serve(tmp_path, fake(**scores), category_check="always") as client:
        always = await predict(client)
    async with serve(tmp_path, fake(men_tshirts=(90.0, 60.0), sarees=(10.0, 60.0)), category_check="off") as client:
        off = await predict(client)
    assert always["category_check"]["best_fit"] == "sarees" and not always["out_of_distribution"]["flagged"]
    assert off["category_check"] is None and off["out_of_distribution"]["flagged"]


async def test_batch_items_carry_the_verdict_and_the_batch_ood_field(tmp_path):
    async with serve(tmp_path, fake(men_tshirts=(90.0, 60.0))) as client:
        response = await client.post("/batch", files=[("images", ("a.jpg", JPEG)), ("images", ("b.jpg", JPEG))],
                                     data={"categories": "men_tshirts", "ood": "keep"})
    items = response.json()["items"]
    assert all(item["result"]["out_of_distribution"]["flagged"] for item in items)
    assert all(item["result"]["attributes"]["sleeve_length"]["value"] == "short sleeves" for item in items)


async def test_metrics_count_scored_and_flagged_images_per_model(tmp_path):
    async with serve(tmp_path, fake(men_tshirts=(90.0, 60.0), sarees=(10.0, 60.0))) as client:
        await predict(client)
        await predict(client, category="sarees")
        text = (await client.get("/metrics")).text
    assert 'catalog_ood_scored_total{model="men_tshirts"} 1.0' in text
    assert 'catalog_ood_flagged_total{model="men_tshirts"} 1.0' in text
    assert 'catalog_ood_scored_total{model="sarees"} 1.0' in text
    assert 'catalog_ood_flagged_total{model="sarees"}' not in text


def v2_request(n=2, **parameters):
    return {"inputs": [{"name": "image", "shape": [n], "datatype": "BYTES",
                        "data": [base64.b64encode(JPEG).decode()] * n}], "parameters": parameters}


async def test_v2_infer_adds_ood_score_and_flag_and_abstains_on_flagged_images(tmp_path):
    async with serve(tmp_path, fake(men_tshirts=(90.0, 60.0))) as client:
        metadata = (await client.get("/v2/models/men_tshirts")).json()
        body = (await client.post("/v2/models/men_tshirts/infer", json=v2_request())).json()
        kept = (await client.post("/v2/models/men_tshirts/infer", json=v2_request(ood="keep"))).json()
    names = [o["name"] for o in metadata["outputs"]]
    assert names[-2:] == ["ood_score", "ood_flagged"]
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["ood_score"]["datatype"] == "FP32" and outputs["ood_score"]["data"] == [90.0, 90.0]
    assert outputs["ood_flagged"]["datatype"] == "BOOL" and outputs["ood_flagged"]["data"] == [True, True]
    assert outputs["sleeve_length"]["data"] == ["", ""]
    assert {o["name"]: o for o in kept["outputs"]}["sleeve_length"]["data"] == ["short sleeves"] * 2


async def test_v2_binary_outputs_encode_the_flag_as_one_byte_per_image(tmp_path):
    request = {**v2_request(), "outputs": [{"name": "ood_flagged", "parameters": {"binary_data": True}},
                                           {"name": "ood_score", "parameters": {"binary_data": True}}]}
    async with serve(tmp_path, fake(men_tshirts=(90.0, 60.0))) as client:
        response = await client.post("/v2/models/men_tshirts/infer", json=request)
    length = int(response.headers["Inference-Header-Content-Length"])
    raw = response.content[length:]
    assert raw[:2] == b"\x01\x01" and struct.unpack("<2f", raw[2:]) == (90.0, 90.0)


async def test_v2_model_without_a_detector_has_no_ood_outputs(tmp_path):
    async with serve(tmp_path, fake()) as client:
        metadata = (await client.get("/v2/models/men_tshirts")).json()
        unknown = await client.post("/v2/models/men_tshirts/infer",
                                    json={**v2_request(1), "outputs": [{"name": "ood_score"}]})
    assert "ood_score" not in [o["name"] for o in metadata["outputs"]]
    assert unknown.status_code == 422 and "unknown outputs ['ood_score']" in unknown.json()["error"]
