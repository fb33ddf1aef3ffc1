"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import SettingsDep
from sigflow.dependencies import dependency

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, settings: SettingsDep) -> JSONResponse:
    """Ready when ClickHouse answers a query, a Kafka bootstrap server accepts connections,
    and the topic feed behind prices and the stream is at most `api_stream_max_lag`
    records behind."""
    kafka = dependency(settings, "kafka")
    checks = {"kafka": await asyncio.to_thread(kafka.reachable)}
    lag = request.app.state.feed.lag()
    checks["stream"] = lag is not None and lag <= settings.api_stream_max_lag
    try:
        client = await request.app.state.warehouse.client()
        await client.query("SELECT 1")
        checks["clickhouse"] = True
    except Exception as exc:  # any failure means "not ready"; say which in the log
        log.warning("readiness: clickhouse check failed", extra={"error": str(exc)})
        checks["clickhouse"] = False
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks, "stream_lag": lag},
        status_code=200 if ready else 503,
    )
