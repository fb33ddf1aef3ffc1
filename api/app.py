"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from prometheus_client import make_asgi_app

import sigflow
from api.deps import Warehouse, require_api_key
from api.errors import install_error_handlers
from api.ratelimit import RateLimiter
from api.routes import candles, health, indicators, signals
from sigflow.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """The API app: routers, error shape, gzip, and the warehouse client's lifecycle."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.warehouse.close()

    app = FastAPI(
        title="sigflow API",
        version=sigflow.__version__,
        description="Candles and signals computed by the sigflow pipeline.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.warehouse = Warehouse(settings)
    app.state.api_keys = None  # created with the first authenticated request
    app.state.rate_limiter = RateLimiter(settings.api_rate_limit_per_minute)
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    install_error_handlers(app)
    app.include_router(health.router)
    authenticated = [Depends(require_api_key)]
    for resource in (candles, indicators, signals):
        app.include_router(resource.router, dependencies=authenticated)
    app.mount("/metrics", make_asgi_app())
    return app
