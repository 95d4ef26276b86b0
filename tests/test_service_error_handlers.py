"""``service/error_handlers.py``: every error is the JSON body, counted; a crash says Connection: close."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import ClientDisconnect

from service.error_handlers import install_error_handlers
from service.metrics import ServiceMetrics

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def app_raising(error: Exception) -> tuple[FastAPI, ServiceMetrics]:
    app, metrics = FastAPI(), ServiceMetrics()

    @app.get("/boom")
    async def boom() -> None:
        raise error

    install_error_handlers(app, metrics)
    return app, metrics


async def get(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get("/boom")


async def test_an_unexpected_error_is_a_bare_500_that_closes_the_connection():
    app, metrics = app_raising(RuntimeError("secret detail"))
    response = await get(app)
    assert response.status_code == 500 and response.json() == {"error": "internal error", "code": "internal_error"}
    assert response.headers["connection"] == "close"
    assert metrics.registry.get_sample_value("catalog_rejections_total", {"reason": "internal_error"}) == 1


async def test_a_client_that_left_is_a_499_counted_apart():
    app, metrics = app_raising(ClientDisconnect())
    assert (await get(app)).status_code == 499
    assert metrics.registry.get_sample_value("catalog_rejections_total", {"reason": "client_closed"}) == 1
