"""``create_app(settings)``: the FastAPI application, its lifespan, routes, error handlers and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service import __version__
from service.backends import create_predictor
from service.direct_route import METHOD, PATH, DirectRoute, ServiceApp, find_route
from service.error_handlers import install_error_handlers
from service.metrics import ServiceMetrics
from service.middleware import form_limits, install_middleware, middleware_chain, wrap
from service.pipeline import ServiceState
from service.predictor import Predictor
from service.routes import api, docs, ui, v2
from service.settings import Settings

log = logging.getLogger("service")


def create_app(settings: Settings | None = None, predictor: Predictor | None = None,
               metrics: ServiceMetrics | None = None) -> FastAPI:
    """Build the app; models load in the lifespan (or earlier, by ``python -m service``)."""
    settings = settings or Settings()
    metrics = metrics or ServiceMetrics()
    state = ServiceState(settings=settings, predictor=predictor or create_predictor(settings, metrics), metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.predictor.start()
        state.lifecycle.started = True
        log.info("ready: %s", ", ".join(f"{m.name} v{m.version}" for m in state.predictor.models()))
        try:
            yield
        finally:
            # Reached after the server stopped taking requests and in-flight ones finished (uvicorn's
            # graceful shutdown); stop() still lets anything queued run, bounded by the drain timeout.
            state.begin_drain()
            await state.predictor.stop(state.lifecycle.drain_left_s())

    app = ServiceApp(
        title="Catalog attributes", version=__version__, lifespan=lifespan,
        description="Predicts Meesho catalog attributes from product images and flags supplier mismatches.",
        form_limits=form_limits(settings),  # type: ignore[arg-type]
        docs_url=None, redoc_url=None,  # served from local assets by routes/docs.py
        # FastAPI's native OpenTelemetry: its request spans only with TRACING (service/tracing.py adds the
        # stage spans); metrics are Prometheus's, logs the service's own.
        telemetry={"tracing": settings.tracing, "metrics": False, "logs": False},
    )
    app.state.service = state
    app.include_router(api.router)
    app.include_router(api.batch_router)
    app.include_router(v2.router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(ui.router)
    app.include_router(docs.router)
    app.mount("/static", ui.static_files(), name="static")
    app.mount(docs.ASSETS_PATH, docs.assets(), name="docs-assets")
    install_error_handlers(app, metrics)
    chain = middleware_chain(settings, metrics, state.lifecycle, state.tracing)
    install_middleware(app, chain)
    if not settings.tracing:  # FastAPI's request span is made in the layers the direct route skips
        app.direct = wrap(DirectRoute(find_route(api.router, PATH, METHOD), app.exception_handlers), chain)
    return app
