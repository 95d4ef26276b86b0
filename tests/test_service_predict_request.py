"""``/predict`` reads its own request: the image as a multipart file or as the bare body, the fields from
the form or the query string, and errors that say what to send."""

from __future__ import annotations

import json

import pytest

from service.errors import InvalidRequestError
from service.predict_request import OPENAPI, merge_field, parse_threshold
from tests.service.fakes import image_bytes
from tests.service.inprocess import serve

pytestmark = pytest.mark.anyio
JPEG = image_bytes()


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.parametrize(("text", "value"), [(None, None), ("", None), ("0", 0.0), ("0.25", 0.25), ("1", 1.0)])
def test_threshold_parses_numbers_from_0_to_1(text, value):
    assert parse_threshold(text) == value


@pytest.mark.parametrize("text", ["1.5", "-0.1", "nan", "high", "inf"])
def test_threshold_outside_0_to_1_is_named(text):
    with pytest.raises(InvalidRequestError, match=f"threshold must be a number from 0 to 1; got '{text}'"):
        parse_threshold(text)


def test_a_field_in_form_and_query_must_agree():
    assert merge_field("category", "sarees", None) == "sarees"
    assert merge_field("category", None, "sarees") == "sarees"
    assert merge_field("category", "sarees", "sarees") == "sarees"
    with pytest.raises(InvalidRequestError, match="'sarees' \\(form\\) and 'kurtis' \\(query\\)"):
        merge_field("category", "sarees", "kurtis")


async def test_bare_body_upload_gives_the_same_answer_as_multipart(tmp_path):
    declared = json.dumps({"sleeve_length": "long sleeves"})
    async with serve(tmp_path) as client:
        form = await client.post("/predict", files={"image": ("x.jpg", JPEG)},
                                 data={"category": "men_tshirts", "declared": declared, "threshold": "0.5"})
        bare = await client.post("/predict", content=JPEG, headers={"Content-Type": "image/jpeg"},
                                 params={"category": "men_tshirts", "declared": declared, "threshold": "0.5"})
        octet = await client.post("/predict?category=Men%20Tshirts", content=JPEG,
                                  headers={"Content-Type": "application/octet-stream"})
    assert form.status_code == bare.status_code == octet.status_code == 200, (form.text, bare.text, octet.text)
    strip = lambda body: {k: v for k, v in body.items() if k != "timings"}  # noqa: E731
    assert strip(form.json()) == strip(bare.json())
    assert bare.json()["conflicts"][0]["declared"] == "long sleeves"
    assert octet.json()["model"] == "men_tshirts"
    assert client.predictor.calls == [("men_tshirts", (3, 32, 32))] * 3


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"content": JPEG, "headers": {"Content-Type": "text/plain"}, "params": {"category": "men_tshirts"}},
         415, "Content-Type 'text/plain' is not accepted on /predict"),
        ({"content": JPEG, "params": {"category": "men_tshirts"}}, 415, "Content-Type 'missing'"),
        ({"content": JPEG, "headers": {"Content-Type": "image/jpeg"}}, 422, "category is required"),
        ({"files": {"picture": ("x.jpg", JPEG)}, "data": {"category": "men_tshirts"}}, 422,
         "the form has no 'image' file"),
        ({"files": {"image": ("x.jpg", JPEG)}, "data": {"category": "men_tshirts"}, "params": {"category": "sarees"}},
         422, "category is given twice"),
        ({"content": JPEG, "headers": {"Content-Type": "image/jpeg"},
          "params": {"category": "men_tshirts", "threshold": "2"}}, 422, "threshold must be a number from 0 to 1"),
        ({"content": b"", "headers": {"Content-Type": "image/jpeg"}, "params": {"category": "men_tshirts"}},
         422, "the image file is empty"),
    ],
)
async def test_malformed_requests_say_what_to_send(tmp_path, kwargs, status, message):
    async with serve(tmp_path) as client:
        response = await client.post("/predict", **kwargs)
        after = await client.post("/predict", content=JPEG, headers={"Content-Type": "image/jpeg"},
                                  params={"category": "men_tshirts"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert after.status_code == 200  # nothing else is broken by the bad request
    assert len(client.predictor.calls) == 1


async def test_api_key_guards_the_bare_upload_too(tmp_path):
    async with serve(tmp_path, api_key="s3cret-key") as client:
        denied = await client.post("/predict?category=men_tshirts", content=JPEG,
                                   headers={"Content-Type": "image/jpeg"})
        allowed = await client.post("/predict?category=men_tshirts", content=JPEG,
                                    headers={"Content-Type": "image/jpeg", "Authorization": "Bearer s3cret-key"})
    assert denied.status_code == 401 and allowed.status_code == 200


async def test_openapi_documents_both_bodies_and_the_query_fields(tmp_path):
    async with serve(tmp_path) as client:
        operation = (await client.get("/openapi.json")).json()["paths"]["/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert {"multipart/form-data", "image/jpeg", "application/octet-stream"} <= set(content)
    assert content["multipart/form-data"]["schema"]["required"] == ["image", "category"]
    assert {p["name"] for p in operation["parameters"]} == {"category", "declared", "threshold", "ood", "X-API-Key"}
    assert operation["requestBody"] == OPENAPI["requestBody"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("PredictResponse")
