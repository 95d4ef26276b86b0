"""HTTP plumbing around the routes: request-body limits enforced while the body streams in, request
timing, and CORS (closed unless origins are configured)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLargeError, to_http
from service.metrics import ServiceMetrics
from service.settings import Settings

FORM_OVERHEAD_BYTES = 1024 * 1024
"""Room for the multipart framing and the small form fields next to one image."""
MAX_FIELD_BYTES = 64 * 1024
"""Largest non-file form field (``declared`` JSON, ids, categories)."""


def body_limit(settings: Settings) -> Callable[[str], int]:
    """The request-body cap for a path: one upload's worth on ``/predict``, the whole-request cap
    elsewhere (``/batch``, v2 infer)."""
    single = settings.max_upload_bytes + FORM_OVERHEAD_BYTES

    def limit(path: str) -> int:
        return single if path.rstrip("/") == "/predict" else settings.max_request_bytes

    return limit


class HttpMiddleware:
    """Plain ASGI (no BaseHTTPMiddleware task overhead). Caps request bodies *while they are read*: a
    declared Content-Length over the cap is refused before any byte is read, and a body that grows past
    it (chunked, or a lying header) is refused the moment it does, with a 413 sent by this middleware;
    the application then sees a client disconnect and whatever it answers is dropped. Nothing past the
    cap is ever buffered or spooled. Also times every request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, limit: Callable[[str], int]) -> None:
        self.app = app
        self.metrics = metrics
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False
        refused = False
        received = 0
        limit = self.limit(scope["path"])

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if refused:
                return  # the 413 went out already; drop the application's late answer
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        async def receive_wrapper() -> Message:
            nonlocal received, refused, status
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not response_started:
                        status = await self._too_large(send, limit)
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                status = await self._too_large(send, limit)
                return
            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except Exception:
                if not refused:
                    raise
                # The application failed on the body we cut short; the client has its 413.
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.request_seconds.labels(template, scope["method"], str(status)).observe(
                time.perf_counter() - started)

    async def _too_large(self, send: Send, limit: int) -> int:
        http = to_http(PayloadTooLargeError(f"request body exceeds {limit} bytes"))
        self.metrics.rejections_total.labels(http.code).inc()
        body = json.dumps(http.body()).encode()
        await send({"type": "http.response.start", "status": http.status,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return http.status


def form_limits(settings: Settings) -> dict[str, int]:
    """Multipart parser limits: files and fields a ``/batch`` of ``max_batch_items`` needs, and small
    text fields (files are bounded by the body cap)."""
    return {"max_files": settings.max_batch_items + 1, "max_fields": 3 * settings.max_batch_items + 8,
            "max_part_size": MAX_FIELD_BYTES}


def install_middleware(app: FastAPI, settings: Settings, metrics: ServiceMetrics) -> None:
    """The body cap and request timing, and CORS when configured."""
    app.add_middleware(HttpMiddleware, metrics=metrics, limit=body_limit(settings))
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"], max_age=600)
