"""``create_app(settings)``: the FastAPI application, its lifespan, error mapping and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import __version__, middleware
from service.batcher import BatcherError
from service.errors import ServiceError, to_http
from service.metrics import ServiceMetrics
from service.models import OnnxPredictor, Predictor
from service.pipeline import ServiceState
from service.routes import api, ui, v2
from service.settings import Settings

log = logging.getLogger("service")


def create_app(settings: Settings | None = None, predictor: Predictor | None = None,
               metrics: ServiceMetrics | None = None) -> FastAPI:
    """Build the app; models load in the lifespan (or earlier, by ``python -m service``)."""
    settings = settings or Settings()
    metrics = metrics or ServiceMetrics()
    predictor = predictor or OnnxPredictor(settings, metrics)
    state = ServiceState(
        settings=settings, predictor=predictor, metrics=metrics,
        executor=ThreadPoolExecutor(settings.resolved_preprocess_threads, thread_name_prefix="decode"),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.predictor.start()
        state.started = True
        log.info("ready: %s", ", ".join(f"{m.name} v{m.version}" for m in state.predictor.models()))
        try:
            yield
        finally:
            # Reached after the server stopped taking requests and in-flight ones finished (uvicorn's
            # graceful shutdown); stop() still lets anything queued run, bounded by the drain timeout.
            state.begin_drain()
            await state.predictor.stop(state.drain_left_s())
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="Catalog attributes", version=__version__, lifespan=lifespan,
        description="Predicts Meesho catalog attributes from product images and flags supplier mismatches.",
        form_limits=middleware.form_limits(settings),  # type: ignore[arg-type]
    )
    app.state.service = state
    app.include_router(api.router)
    app.include_router(v2.router)

    async def service_error(request: Request, error: Exception) -> JSONResponse:
        http = to_http(error)
        metrics.rejections_total.labels(http.code).inc()
        if http.status >= 500 and http.code == "internal_error":
            log.exception("unhandled error on %s", request.url.path, exc_info=error)
        return JSONResponse(http.body(), status_code=http.status, headers=http.headers)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        metrics.rejections_total.labels("invalid_request").inc()
        return JSONResponse({"error": problems, "code": "invalid_request"}, status_code=422)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(BatcherError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(ui.router)
    app.mount("/static", ui.static_files(), name="static")

    middleware.install(app, settings, metrics)
    return app
