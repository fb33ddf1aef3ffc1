"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from prometheus_client import make_asgi_app

import sigflow
from api.deps import Warehouse, require_api_key, require_management_key
from api.errors import ApiError, install_error_handlers
from api.fanout import Hub
from api.feed import TopicFeed, load_latest_prices
from api.middleware import RequestContextMiddleware
from api.pricebook import PriceBook
from api.ratelimit import RateLimiter
from api.routes import (
    anomalies,
    candles,
    dashboard,
    health,
    indicators,
    onchain,
    prices,
    signals,
    stream,
    symbols,
    webhooks,
)
from sigflow.settings import Settings
from sinks.warehouse import database_name
from sinks.webhooks.secret_box import SecretBox

log = logging.getLogger(__name__)


async def warm_price_book(app: FastAPI) -> None:
    """Cold start: the newest warehouse trades, for prices the stream has not shown yet."""
    try:
        client = await app.state.warehouse.client()
        loaded = await load_latest_prices(
            client, database_name(app.state.settings), app.state.price_book
        )
    except (ApiError, ClickHouseError, OSError) as exc:
        log.warning("price book not warmed from the warehouse", extra={"error": str(exc)})
        return
    log.info("price book warmed from the warehouse", extra={"pairs": loaded})


def create_app(settings: Settings) -> FastAPI:
    """The API app: routers, error shape, middleware, and the lifecycles of the warehouse
    client and of the topic feed behind prices and the live stream."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.feed.start()
        warming = asyncio.create_task(warm_price_book(app))
        try:
            yield
        finally:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
            await app.state.feed.stop()
            await app.state.warehouse.close()

    app = FastAPI(
        title="sigflow API",
        version=sigflow.__version__,
        description="Prices, candles, indicators, signals, anomalies and on-chain transfers "
        "computed by the sigflow pipeline, alert webhook subscriptions, a live stream, and "
        "a dashboard at `/`.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.warehouse = Warehouse(settings)
    app.state.api_keys = None  # created with the first authenticated request
    app.state.webhook_secrets = SecretBox.from_settings(settings)  # a bad key fails here
    app.state.rate_limiter = RateLimiter(settings.api_rate_limit_per_minute)
    app.state.price_book = PriceBook(settings.api_price_max_skew_ms)
    app.state.hub = Hub(settings.api_stream_queue_size, settings.api_stream_recent)
    app.state.feed = TopicFeed(settings, app.state.price_book, app.state.hub)
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    if settings.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_cors_origins,
            allow_methods=["GET"],
            allow_headers=["X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Next-Cursor", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.include_router(stream.router)  # authenticates itself (header or ?api_key=)
    authenticated = [Depends(require_api_key)]
    for resource in (prices, candles, indicators, signals, anomalies, onchain, symbols):
        app.include_router(resource.router, dependencies=authenticated)
    app.include_router(webhooks.router, dependencies=[Depends(require_management_key)])
    app.mount("/static", dashboard.static_files(), name="static")
    app.mount("/metrics", make_asgi_app())
    return app
