"""HTTP plumbing around the routes: request-body size and time limits enforced while the body streams
in, uploads cut short by a drain, request timing, and CORS (closed unless origins are configured)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLargeError, RequestTimeoutError, ShuttingDownError, to_http
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics
from service.request_context import REQUEST_ID_HEADER, log_access, request_id, request_id_from
from service.settings import Settings
from service.tracing import Tracing

log = logging.getLogger("service")


def shutting_down() -> ShuttingDownError:
    return ShuttingDownError("the server is shutting down; send this request again")


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


@dataclass
class _Exchange:
    """One request as the middleware sees it."""

    limit: int
    body_deadline: float
    status: int = 500
    response_started: bool = False
    answered: bool = False
    """The middleware answered for the application (413, 408 or 503): its late answer is dropped."""
    client_gone: bool = False
    body_done: bool = False
    body_done_at: float | None = None
    received: int = 0


class HttpMiddleware:
    """Plain ASGI (no BaseHTTPMiddleware task overhead) around every request:

    - the body is capped *while it is read*: a declared Content-Length over the cap is refused before
      any byte is read, a body that grows past it (chunked, or a lying header) the moment it does (413);
    - the body must arrive within ``body_timeout_s`` of the request's start (408);
    - when a drain begins, requests still receiving their body are answered 503 at once: a body still
      arriving is not admitted work, and must not hold the shutdown;
    - a client that goes away before its body is read is counted as status 499 (as nginx does);
    - every request is timed by route template and status.

    After the middleware answered, the application sees a client disconnect and whatever it answers is
    dropped. Nothing past the cap is ever buffered or spooled."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, limit: Callable[[str], int], body_timeout_s: float,
                 lifecycle: Lifecycle, tracing: Tracing) -> None:
        self.app = app
        self._tracing = tracing
        self.metrics = metrics
        self.limit = limit
        self.body_timeout_s = body_timeout_s
        self._lifecycle = lifecycle
        self._receiving: set[asyncio.Timeout] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._templates: dict[object, str] | None = None
        lifecycle.on_drain.append(self._drain_started)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        self._loop = loop = asyncio.get_running_loop()
        exchange = _Exchange(self.limit(scope["path"]), loop.time() + self.body_timeout_s)
        headers = dict(scope["headers"])
        exchange.body_done = headers.get(b"content-length", b"0") == b"0" and b"transfer-encoding" not in headers
        token = request_id.set(request_id_from(scope["headers"]))
        id_header = (REQUEST_ID_HEADER, request_id.get().encode())

        async def send_wrapper(message: Message) -> None:
            if exchange.answered:
                return
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.response_started = True
                extra = [id_header]
                if not exchange.body_done:
                    # Answered before its body was read (a 401, a 404): the rest of the body would keep
                    # the connection busy past every deadline, so it is closed after this answer.
                    extra.append((b"connection", b"close"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        async def receive_wrapper() -> Message:
            return await self._receive(exchange, receive, send)

        try:
            declared = headers.get(b"content-length")
            # More than 20 digits (leading zeros included) is over any limit, and int() refuses 4,300.
            if declared is not None and declared.isdigit() and (len(declared) > 20 or int(declared) > exchange.limit):
                await self._answer(exchange, send, PayloadTooLargeError(f"request body exceeds {exchange.limit} bytes"))
                return
            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except Exception as error:
                if not (exchange.answered or exchange.client_gone):
                    await self._crashed(exchange, send, scope, error)
                # Else the application failed on the body we cut short, or on a client that left.
            finally:
                self._trace_read(exchange, started)
        finally:
            status = 499 if exchange.client_gone and not exchange.answered else exchange.status
            template = self._template(scope)
            self.metrics.request_seconds.labels(template, scope["method"], str(status)).observe(
                time.perf_counter() - started)
            log_access(scope["method"], scope["path"], template, status, started, scope.get("client"),
                       exchange.received)
            request_id.reset(token)

    async def _receive(self, exchange: _Exchange, receive: Receive, send: Send) -> Message:
        if exchange.answered:
            return {"type": "http.disconnect"}
        if exchange.body_done:
            return await receive()  # after the body only a disconnect can come: no deadline
        if self._lifecycle.draining:  # a body still arriving when the drain began (or starting after it)
            await self._answer(exchange, send, shutting_down())
            return {"type": "http.disconnect"}
        try:
            async with asyncio.timeout_at(exchange.body_deadline) as timeout:
                self._receiving.add(timeout)
                try:
                    message = await receive()
                finally:
                    self._receiving.discard(timeout)
        except TimeoutError:
            if self._lifecycle.draining:
                error: Exception = shutting_down()
            else:
                error = RequestTimeoutError(f"request body not received within {self.body_timeout_s:g} s")
            await self._answer(exchange, send, error)
            return {"type": "http.disconnect"}
        if message["type"] == "http.disconnect":
            exchange.client_gone = True
        elif message["type"] == "http.request":
            exchange.received += len(message.get("body", b""))
            exchange.body_done = not message.get("more_body", False)
            if exchange.body_done:
                exchange.body_done_at = time.perf_counter()
            if exchange.received > exchange.limit:
                await self._answer(exchange, send, PayloadTooLargeError(f"request body exceeds {exchange.limit} bytes"))
                return {"type": "http.disconnect"}
        return message

    def _trace_read(self, exchange: _Exchange, started: float) -> None:
        """The body read as a span of the request's (FastAPI's own), when tracing is on."""
        if self._tracing.enabled and exchange.body_done_at is not None and exchange.received:
            ago = time.perf_counter() - exchange.body_done_at
            self._tracing.stage("read", exchange.body_done_at - started, time.time_ns() - int(ago * 1e9),
                                bytes=exchange.received)

    def _template(self, scope: Scope) -> str:
        """The route's path template: FastAPI's routes name themselves in the scope; plain Starlette routes
        (the API docs) and mounts (the static files) are found by the endpoint they matched to."""
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        if self._templates is None and "app" in scope:
            self._templates = {getattr(r, "endpoint", None) or getattr(r, "app", None): r.path
                               for r in scope["app"].routes if hasattr(r, "path")}
        return (self._templates or {}).get(scope.get("endpoint"), "unmatched")

    def _drain_started(self) -> None:
        # Called from a signal handler, which may interrupt the loop: hand over through the safe path.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._abort_uploads)

    def _abort_uploads(self) -> None:
        now = asyncio.get_running_loop().time()
        for timeout in list(self._receiving):
            with contextlib.suppress(RuntimeError):  # one expiring in this same loop iteration answers itself
                timeout.reschedule(now)

    async def _crashed(self, exchange: _Exchange, send: Send, scope: Scope, error: Exception) -> None:
        """An error no handler caught, answered here, inside the request's context (so its log line and
        answer carry the request id), as a bare 500 that closes the connection; details only in the log."""
        log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=error)
        if exchange.response_started:
            raise error  # half an answer went out: uvicorn closes the connection
        await self._answer(exchange, send, error)

    async def _answer(self, exchange: _Exchange, send: Send, error: Exception) -> None:
        """Answer for the application (once, and only if it has not started its own answer)."""
        if exchange.answered:
            return
        exchange.answered = True
        if exchange.response_started:
            return
        http = to_http(error)
        self.metrics.rejections_total.labels(http.code).inc()
        exchange.status = http.status
        body = json.dumps(http.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                   (b"content-length", str(len(body)).encode()), (REQUEST_ID_HEADER, request_id.get().encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in http.headers.items()]
        await send({"type": "http.response.start", "status": http.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def form_limits(settings: Settings) -> dict[str, int]:
    """Multipart parser limits: files and fields a ``/batch`` of ``max_batch_items`` needs, and small
    text fields (files are bounded by the body cap)."""
    return {"max_files": settings.max_batch_items + 1, "max_fields": 3 * settings.max_batch_items + 8,
            "max_part_size": MAX_FIELD_BYTES}


def middleware_chain(settings: Settings, metrics: ServiceMetrics, lifecycle: Lifecycle,
                     tracing: Tracing) -> list[Middleware]:
    """Outermost first: CORS when configured, then the body cap and deadline, request timing and tracing."""
    chain = [Middleware(HttpMiddleware, metrics=metrics, limit=body_limit(settings),
                        body_timeout_s=settings.body_timeout_s, lifecycle=lifecycle, tracing=tracing)]
    if settings.cors_origins:
        chain.insert(0, Middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                                   allow_headers=["Authorization", "X-API-Key", "Content-Type"], max_age=600))
    return chain


def install_middleware(app: FastAPI, chain: list[Middleware]) -> None:
    """The chain around every route of the app."""
    for middleware in reversed(chain):  # add_middleware puts each one outside those added before
        app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)


def wrap(app: ASGIApp, chain: list[Middleware]) -> ASGIApp:
    """``app`` inside the chain, for a route the server reaches without FastAPI (``service/direct_route.py``)."""
    for middleware in reversed(chain):
        app = middleware.cls(app, *middleware.args, **middleware.kwargs)
    return app
