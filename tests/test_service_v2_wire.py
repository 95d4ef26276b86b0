"""``service/v2_wire.py``: both wire formats of an infer request and response."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from service.errors import InvalidRequestError, PayloadTooLargeError
from service.schemas import InferenceResponse, ResponseOutput
from service.v2_wire import encode_infer_response, parse_infer_body

FILES = [b"\xff\xd8\xff first", b"second file"]


def binary_body(files: list[bytes], outputs: list[dict] | None = None) -> tuple[bytes, str]:
    raw = b"".join(struct.pack("<I", len(f)) + f for f in files)
    header = json.dumps({"inputs": [{"name": "image", "shape": [len(files)], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         **({"outputs": outputs} if outputs else {})}).encode()
    return header + raw, str(len(header))


def test_json_and_binary_requests_carry_the_same_files():
    as_json = json.dumps({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                      "data": [base64.b64encode(f).decode() for f in FILES]}]}).encode()
    body, length = binary_body(FILES, outputs=[{"name": "color", "parameters": {"binary_data": True}},
                                               {"name": "neck"}])
    assert parse_infer_body(as_json, None, 8, 100).files == FILES
    parsed = parse_infer_body(body, length, 8, 100)
    assert parsed.files == FILES and parsed.binary_outputs == frozenset({"color"})


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda body, n: (body[:-3], n), "does not match"),
    (lambda body, n: (body, "999999"), "must be a byte count within the body"),
    (lambda body, n: (body[:int(n)] + b"\x00\x00", n), "does not match"),
])
def test_malformed_binary_requests_are_422s_naming_the_problem(mutate, message):
    with pytest.raises(InvalidRequestError, match=message):
        parse_infer_body(*mutate(*binary_body(FILES)), 8, 100)


def test_shapes_are_bounded_before_any_element_is_decoded():
    body = json.dumps({"inputs": [{"name": "image", "shape": [10_000], "datatype": "BYTES", "data": []}]})
    with pytest.raises(PayloadTooLargeError, match="10000 images; the limit is 8"):
        parse_infer_body(body.encode(), None, 8, 100)


def test_binary_responses_put_the_asked_outputs_after_the_json_header():
    response = InferenceResponse(model_name="m", model_version="1", outputs=[
        ResponseOutput(name="color", shape=[2], datatype="BYTES", data=["red", ""]),
        ResponseOutput(name="color_confidence", shape=[2], datatype="FP32", data=[0.9, 0.25])])
    body, headers = encode_infer_response(response, frozenset({"color_confidence"}))
    length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:length])
    assert header["outputs"][0]["data"] == ["red", ""] and "data" not in header["outputs"][1]
    assert header["outputs"][1]["parameters"]["binary_data_size"] == 8
    assert np.frombuffer(body[length:], "<f4").tolist() == [pytest.approx(0.9), 0.25]
    plain, plain_headers = encode_infer_response(response, frozenset())
    assert plain_headers == {"Content-Type": "application/json"} and json.loads(plain)["outputs"][1]["data"][1] == 0.25


@pytest.mark.parametrize("length", ["\u00b2", "0" * 5000 + "7"])
def test_a_header_length_that_is_not_a_plain_count_is_a_422(length):
    body, _ = binary_body(FILES)
    with pytest.raises(InvalidRequestError, match="must be a byte count"):
        parse_infer_body(body, length, 8, 100)


def test_a_binary_tensor_holding_more_elements_than_its_shape_stops_at_once():
    header = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 4 * 1_000_000}}]}).encode()
    with pytest.raises(InvalidRequestError, match="more than the 1 elements"):
        parse_infer_body(header + b"\0" * 4_000_000, str(len(header)), 8, 100)
