"""``service/middleware.py`` driven directly as ASGI: what a draining server answers to a body that is
still to be read, and which answers close their connection."""

from __future__ import annotations

import asyncio

from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics
from service.middleware import HttpMiddleware
from service.tracing import Tracing


async def exchange(app, headers, lifecycle, body_parts=(b"abc",)):
    middleware = HttpMiddleware(app, ServiceMetrics(), lambda path: 1000, body_timeout_s=5.0,
                                lifecycle=lifecycle, tracing=Tracing(False))
    parts = list(body_parts)
    sent: list[dict] = []

    async def receive():
        if parts:
            return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    await middleware(scope, receive, send)
    return sent


def test_a_body_read_after_the_drain_began_is_answered_503_at_once():
    lifecycle = Lifecycle(drain_budget_s=30, started=True)
    received: list[dict] = []

    async def app(scope, receive, send):
        lifecycle.begin_drain()  # the drain begins while this request is in the application, before it reads
        received.append(await receive())

    sent = asyncio.run(exchange(app, [(b"content-length", b"3")], lifecycle))
    assert received == [{"type": "http.disconnect"}] and sent[0]["status"] == 503


def test_an_answer_before_the_body_was_read_closes_the_connection_and_one_after_does_not():
    async def early(scope, receive, send):
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def reads_first(scope, receive, send):
        await receive()
        await early(scope, receive, send)

    lifecycle = Lifecycle(drain_budget_s=30, started=True)
    for app, closes in ((early, True), (reads_first, False)):
        sent = asyncio.run(exchange(app, [(b"content-length", b"3")], lifecycle))
        assert ((b"connection", b"close") in sent[0]["headers"]) is closes
    # No body declared: nothing is left to read, so keep-alive stays.
    sent = asyncio.run(exchange(early, [], lifecycle, body_parts=()))
    assert (b"connection", b"close") not in sent[0]["headers"]
