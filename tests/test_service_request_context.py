"""``service/request_context.py``: request ids on responses and in every log line of the request, and
the JSON access log."""

from __future__ import annotations

import json
import logging

import pytest

from service.request_context import RequestIdFilter, access_log, request_id, request_id_from
from tests.service.inprocess import serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_a_plain_client_id_is_kept_and_anything_else_replaced():
    assert request_id_from([(b"x-request-id", b"req-42.a:b")]) == "req-42.a:b"
    for hostile in (b"two words", b"x" * 129, b"new\nline", b""):
        generated = request_id_from([(b"x-request-id", hostile)])
        assert generated != hostile.decode(errors="replace") and len(generated) == 32


async def test_the_id_is_returned_logged_on_every_line_and_in_the_access_log(tmp_path, monkeypatch):
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            RequestIdFilter().filter(record)
            records.append(record)

    # A handler on the access logger itself: another test may have run `python -m service`'s logging
    # set-up, which stops the access log from propagating to the root logger.
    keep = Keep(level=logging.INFO)
    monkeypatch.setattr(access_log, "disabled", False)
    monkeypatch.setattr(access_log, "propagate", False)
    level = access_log.level
    access_log.setLevel(logging.INFO)  # setLevel, not the attribute: it also clears the enabled-for cache
    access_log.addHandler(keep)
    try:
        async with serve(tmp_path) as client:
            given = await client.get("/v2/models/nope", headers={"X-Request-ID": "trace-1"})
            made = await client.get("/v2/health/live")
    finally:
        access_log.removeHandler(keep)
        access_log.setLevel(level)
    assert given.headers["x-request-id"] == "trace-1" and len(made.headers["x-request-id"]) == 32
    lines = [json.loads(r.getMessage()) for r in records if r.name == access_log.name]
    assert [(line["request_id"], line["route"], line["status"]) for line in lines] == [
        ("trace-1", "/v2/models/{name}", 404), (made.headers["x-request-id"], "/v2/health/live", 200)]
    assert {r.request_id for r in records if r.name == access_log.name} == {"trace-1", made.headers["x-request-id"]}
    assert request_id.get() == "-"


async def test_a_crash_no_handler_caught_is_a_bare_500_that_keeps_its_request_id(tmp_path):
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.request_id} {record.getMessage()}")  # type: ignore[attr-defined]

    keep = Keep()
    keep.addFilter(RequestIdFilter())  # as python -m service's handler does: the id read at emit time
    logging.getLogger("service").addHandler(keep)
    try:
        async with serve(tmp_path) as client:

            async def crash() -> None:
                raise RuntimeError("secret detail")

            client.app.add_api_route("/crash", crash)
            response = await client.get("/crash", headers={"X-Request-ID": "crash-7"})
    finally:
        logging.getLogger("service").removeHandler(keep)
    assert response.status_code == 500 and response.json() == {"error": "internal error", "code": "internal_error"}
    assert response.headers["x-request-id"] == "crash-7" and response.headers["connection"] == "close"
    assert "crash-7 unhandled error on GET /crash" in seen
