"""The dashboard page at `/` and its static files (no build step, no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    """Live prices, a candle chart with indicator overlays, signals and anomalies."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)
