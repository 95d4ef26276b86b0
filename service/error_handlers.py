"""The app's exception handlers: every error becomes the JSON error body with the status that
``service.errors.to_http`` decides, and is counted by reason; details of unexpected ones go to the log
only."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.batching import BatcherError
from service.errors import ServiceError, to_http
from service.metrics import ServiceMetrics

log = logging.getLogger("service")


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    async def mapped_error(request: Request, error: Exception) -> JSONResponse:
        # Domain errors, the batcher's and the framework's own (unknown route, wrong method, ...).
        http = to_http(error)
        if http.code == "internal_error":  # a batcher failure with no status of its own
            log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        metrics.rejections_total.labels(http.code).inc()
        return JSONResponse(http.body(), status_code=http.status, headers=http.headers)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)  # registered for this type only
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        metrics.rejections_total.labels("invalid_request").inc()
        return JSONResponse({"error": problems, "code": "invalid_request"}, status_code=422)

    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        metrics.rejections_total.labels("internal_error").inc()
        http = to_http(error)
        return JSONResponse(http.body(), status_code=http.status)

    for kind in (ServiceError, BatcherError, StarletteHTTPException):
        app.add_exception_handler(kind, mapped_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
