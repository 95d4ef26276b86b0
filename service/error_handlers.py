"""The app's exception handlers: every error becomes the JSON error body with the status that
``service.errors.to_http`` decides, and is counted by reason; details of unexpected ones go to the log
only."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.batching import BatcherError
from service.errors import ServiceError, describe_problems, safe_text, to_http
from service.metrics import ServiceMetrics

log = logging.getLogger("service")

CLIENT_CLOSED = 499
"""nginx's status for a client that closed the connection before it was answered."""


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    async def mapped_error(request: Request, error: Exception) -> Response:
        # Domain errors, the batcher's and the framework's own (unknown route, wrong method, ...).
        if isinstance(error.__cause__, ClientDisconnect):  # FastAPI's "error parsing the body" on a form
            return await client_closed(request, error.__cause__)
        http = to_http(error)
        if http.code == "internal_error":  # a batcher failure with no status of its own
            log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        if not (isinstance(error, StarletteHTTPException) and error.status_code == 404):
            # An unknown path (a browser's /favicon.ico, a scanner) is not refused work; a v2 request for an
            # unknown model is (ModelNotFoundError, counted).
            metrics.rejections_total.labels(http.code).inc()
        return JSONResponse(http.body(), status_code=http.status, headers=http.headers)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)  # registered for this type only
        problems = describe_problems(error.errors())
        metrics.rejections_total.labels("invalid_request").inc()
        return JSONResponse({"error": safe_text(problems), "code": "invalid_request"}, status_code=422)

    async def client_closed(request: Request, error: Exception) -> Response:
        # Not a server error: one line, no traceback; the middleware counts the request as 499.
        log.info("client closed the connection before its request was read: %s %s", request.method, request.url.path)
        metrics.rejections_total.labels("client_closed").inc()
        return Response(status_code=CLIENT_CLOSED)

    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        metrics.rejections_total.labels("internal_error").inc()
        http = to_http(error)
        # Starlette re-raises after this answer and uvicorn then closes the connection: say so.
        return JSONResponse(http.body(), status_code=http.status, headers={"Connection": "close"})

    for kind in (ServiceError, BatcherError, StarletteHTTPException):
        app.add_exception_handler(kind, mapped_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_closed)
    app.add_exception_handler(Exception, unexpected_error)
