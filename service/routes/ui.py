"""The try-it web page at ``/``: static files served by the app itself, no separate build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    # Browsers ask for /favicon.ico whatever the page says; the page's own icon answers it.
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)
