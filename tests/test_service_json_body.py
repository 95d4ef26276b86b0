"""``service/json_body.py``: JSON bodies bounded before they are parsed."""

from __future__ import annotations

import pytest

from service.errors import InvalidRequestError, PayloadTooLargeError
from service.json_body import parse_bounded


def test_a_body_within_the_bound_parses():
    assert parse_bounded(b'{"inputs": [{"data": ["a", "b"]}], "id": "x"}', 10) == {
        "inputs": [{"data": ["a", "b"]}], "id": "x"}


def test_too_many_elements_are_refused_before_parsing():
    with pytest.raises(PayloadTooLargeError, match="holds up to 1001 elements; the limit is 1000"):
        parse_bounded(b"[" + b",".join([b"1"] * 1001) + b"]", 1000)


@pytest.mark.parametrize(("body", "message"), [
    (b"[" * 100_000, "nested too deeply"),
    (b"[" + b"9" * 5000 + b"]", "not valid JSON: Exceeds the limit"),
    (b"{nope", "not valid JSON"),
])
def test_what_json_cannot_read_is_a_422_with_a_short_reason(body, message):
    with pytest.raises(InvalidRequestError, match=message) as caught:
        parse_bounded(body, 10)
    assert len(str(caught.value)) < 300
