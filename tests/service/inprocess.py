"""The app in-process: :func:`serve` runs its lifespan and hands back an ``httpx.AsyncClient`` over
``ASGITransport`` (no sockets), with a fake predictor unless given one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from service.app import create_app
from service.settings import Settings
from tests.service.fakes import FakePredictor


@asynccontextmanager
async def serve(tmp_path: Path, predictor: Any = None, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    predictor = predictor or FakePredictor()
    app = create_app(Settings(repository=tmp_path, preprocess_threads=2, **settings), predictor)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            client.predictor = predictor  # type: ignore[attr-defined]
            yield client
