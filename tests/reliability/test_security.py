"""Security: API key on prediction routes (constant-time), no route takes a server-side path or URL,
no stack traces in errors, upload limits enforced while the body streams in, CORS closed by default."""

from __future__ import annotations

import asyncio
import base64
import select
import socket
import time

import httpx
import pytest

from service import deps
from service.app import create_app
from service.errors import UnauthorizedError
from service.settings import Settings
from tests.reliability.servers import API_KEY, UPLOAD_LIMIT
from tests.service.fakes import FakePredictor, image_bytes

JPEG = image_bytes()


def prediction_calls(url: str, headers: dict[str, str]) -> list[httpx.Response]:
    encoded = base64.b64encode(JPEG).decode()
    return [
        httpx.post(f"{url}/predict", files={"image": ("a.jpg", JPEG)}, data={"category": "men_tshirts"},
                   headers=headers, timeout=10),
        httpx.post(f"{url}/batch", files=[("images", ("a.jpg", JPEG))], data={"categories": "men_tshirts"},
                   headers=headers, timeout=10),
        httpx.post(f"{url}/v2/models/men_tshirts/infer", headers=headers, timeout=10, json={
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}]}),
    ]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong-key-of-some-length"},
                                     {"Authorization": "Bearer wrong-key-of-some-length"},
                                     {"Authorization": f"Basic {API_KEY}"}, {"X-API-Key": ""}],
                         ids=["none", "wrong", "wrong-bearer", "not-bearer", "empty"])
def test_prediction_routes_answer_401_without_the_key(keyed_server, headers):
    for response in prediction_calls(keyed_server.url, headers):
        assert response.status_code == 401, (response.request.url, response.text)
        assert response.json()["code"] == "unauthorized" and API_KEY not in response.text


def test_prediction_routes_work_with_the_key_and_health_stays_open(keyed_server):
    for headers in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}):
        assert [r.status_code for r in prediction_calls(keyed_server.url, headers)] == [200, 200, 200]
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert httpx.get(f"{keyed_server.url}{path}", timeout=5).status_code == 200


def test_key_comparison_is_constant_time(monkeypatch):
    calls = []
    real = deps.hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", recording)

    class State:
        settings = Settings(api_key=API_KEY, repository=".")

    with pytest.raises(UnauthorizedError):
        deps.check_api_key(State(), x_api_key="x" * len(API_KEY), authorization=None)
    assert deps.check_api_key(State(), x_api_key=API_KEY, authorization=None) is None
    assert len(calls) == 2


def test_no_route_takes_a_server_side_path_or_url(server):
    schema = httpx.get(f"{server.url}/openapi.json", timeout=5).json()
    suspicious = ("path", "url", "uri", "file_name", "filename", "location", "href", "src", "fetch")
    names = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            names += [(path, method, p["name"]) for p in operation.get("parameters", [])]
    for component, body in schema["components"]["schemas"].items():
        names += [("schema", component, prop) for prop in body.get("properties", {})]
    assert not [n for n in names if any(word in n[2].lower() for word in suspicious)], names
    # An image given as a path or URL string instead of a file is refused, never fetched.
    for text in ("/etc/passwd", "file:///etc/passwd", "http://169.254.169.254/latest/meta-data/"):
        # As a text field of a multipart form, as an urlencoded form, and as a bare body.
        as_field = httpx.post(f"{server.url}/predict", files={"image": (None, text)},
                              data={"category": "men_tshirts"}, timeout=5)
        assert as_field.status_code == 422 and "no 'image' file" in as_field.text, as_field.text
        urlencoded = httpx.post(f"{server.url}/predict", data={"image": text, "category": "men_tshirts"}, timeout=5)
        assert urlencoded.status_code == 415 and "root:" not in urlencoded.text, urlencoded.text
        bare = httpx.post(f"{server.url}/predict?category=men_tshirts", content=text.encode(),
                          headers={"Content-Type": "image/jpeg"}, timeout=5)
        assert bare.status_code == 422 and "not an image" in bare.text, bare.text
        encoded = base64.b64encode(text.encode()).decode()
        infer = httpx.post(f"{server.url}/v2/models/men_tshirts/infer", timeout=5, json={
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}]})
        assert infer.status_code == 422 and "root:" not in infer.text, infer.text


def test_error_responses_never_carry_stack_traces(server):
    deep = "[" * 100_000  # json.loads recursion
    responses = [
        httpx.get(f"{server.url}/no/such/route", timeout=5),
        httpx.delete(f"{server.url}/predict", timeout=5),
        httpx.post(f"{server.url}/predict", data={"category": "men_tshirts"}, timeout=5),
        httpx.post(f"{server.url}/predict", files={"image": ("a.jpg", b"junk")}, data={"category": "nope"},
                   timeout=5),
        httpx.post(f"{server.url}/predict", files={"image": ("a.jpg", JPEG)},
                   data={"category": "men_tshirts", "declared": deep[:60_000]}, timeout=5),
        httpx.post(f"{server.url}/v2/models/men_tshirts/infer", content=deep.encode(),
                   headers={"content-type": "application/json"}, timeout=5),
        httpx.post(f"{server.url}/v2/models/men_tshirts/infer", content=b"{not json", timeout=5,
                   headers={"content-type": "application/json"}),
        httpx.post(f"{server.url}/predict", content=b"--x\r\nbroken", timeout=5,
                   headers={"content-type": "multipart/form-data; boundary=x"}),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, (response.request.url, response.status_code, response.text)
        body = response.json()
        assert set(body) == {"error", "code"}, body
        assert "Traceback" not in response.text and 'File "' not in response.text, response.text


def raw_upload(port: int, head: bytes, chunks: int, chunk: bytes) -> tuple[int, bytes]:
    """Send ``head`` then up to ``chunks`` chunked-encoding chunks, stopping as soon as the server
    answers; returns the bytes of body sent and the answer."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for _ in range(chunks):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"}" not in answer:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            answer += data
    return sent, answer


def test_upload_limit_is_enforced_while_streaming_not_after_buffering(server):
    rss_before = server.rss_bytes()
    boundary = "b0undary"
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode()
    sent, answer = raw_upload(server.port, head + b"%x\r\n" % len(part) + part + b"\r\n", chunks=4000,
                              chunk=b"\xff" * 65536)  # offers 250 MiB
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"payload_too_large"' in answer.replace(b" ", b"")
    assert sent < UPLOAD_LIMIT + 1024 * 1024 + 16 * 1024 * 1024, sent  # cut off near the limit
    assert server.rss_bytes() - rss_before < 50 * 1024 * 1024
    # A declared length over the limit is refused before the body is read.
    sent, answer = raw_upload(server.port, (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n"
                                            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"), 0, b"")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert server.alive() and server.ready()


def test_cors_is_closed_by_default(server):
    preflight = httpx.options(f"{server.url}/predict", timeout=5, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    get = httpx.get(f"{server.url}/models", headers={"Origin": "https://evil.example"}, timeout=5)
    assert get.status_code == 200 and "access-control-allow-origin" not in get.headers


def test_cors_allows_only_the_configured_origins(tmp_path):
    app = create_app(Settings(repository=tmp_path, cors_origins="https://admin.example"), FakePredictor())

    async def preflight(origin: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
            return await client.options("/predict", headers={"Origin": origin,
                                                             "Access-Control-Request-Method": "POST"})

    allowed = asyncio.run(preflight("https://admin.example"))
    assert allowed.headers.get("access-control-allow-origin") == "https://admin.example"
    refused = asyncio.run(preflight("https://evil.example"))
    assert "access-control-allow-origin" not in refused.headers
