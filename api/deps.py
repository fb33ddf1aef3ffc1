"""Dependencies shared by the routers: settings, the warehouse client, API-key auth."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery
from starlette.requests import HTTPConnection

from api.errors import ApiError
from api.fanout import Hub
from api.keys import ApiKeyStore
from api.pricebook import PriceBook
from sigflow.exceptions import StackError
from sigflow.settings import Settings
from sinks.warehouse import connect, database_name

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
API_KEY_QUERY = APIKeyQuery(name="api_key", auto_error=False)


class Warehouse:
    """A lazily (re)connected ClickHouse client, shared by all requests of the app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> AsyncClient:
        """The client, connecting on first use; 503 while the warehouse is unreachable."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    try:
                        self._client = await connect(self.settings)
                    except StackError as exc:
                        raise ApiError(503, "warehouse_unavailable", str(exc)) from exc
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


async def authenticate(
    connection: HTTPConnection, token: str | None, *, public_read: bool = True
) -> str:
    """The caller (`key:ID`, or `ip:HOST` under public read where `public_read` allows
    it); 401 without a valid key, 429 past the caller's rate limit. Also noted on the
    connection for the access log."""
    settings: Settings = connection.app.state.settings
    if token is None:
        if not (public_read and settings.api_public_read):
            raise ApiError(401, "missing_api_key", "send an API key in the X-API-Key header")
        caller = f"ip:{connection.client.host if connection.client else 'unknown'}"
    else:
        keys = connection.app.state.api_keys
        if keys is None:
            warehouse: Warehouse = connection.app.state.warehouse
            keys = connection.app.state.api_keys = ApiKeyStore(
                await warehouse.client(), database_name(settings)
            )
        key_id = await keys.verify(token)
        if key_id is None:
            raise ApiError(401, "invalid_api_key", "the X-API-Key is unknown or revoked")
        caller = f"key:{key_id}"
    connection.state.caller = caller
    retry_after = connection.app.state.rate_limiter.retry_after(caller)
    if retry_after is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {settings.api_rate_limit_per_minute} requests/minute exceeded",
            headers={"Retry-After": str(retry_after)},
        )
    return caller


async def require_api_key(
    request: Request,
    api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
) -> str:
    """The caller of a /v1 request, authenticated by its X-API-Key header."""
    return await authenticate(request, api_key)


async def require_management_key(
    request: Request,
    api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
) -> str:
    """Like `require_api_key`, but never public: `api_public_read` opens reads of market
    data, not the management of webhooks (their URLs, and POSTs sigflow signs)."""
    return await authenticate(request, api_key, public_read=False)


async def require_stream_key(
    request: Request,
    header_key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    query_key: Annotated[str | None, Security(API_KEY_QUERY)] = None,
) -> str:
    """Like `require_api_key`, but the key may also come as `?api_key=`, because a
    browser's EventSource and WebSocket cannot send headers."""
    return await authenticate(request, header_key or query_key)


async def query_rows(
    clickhouse: AsyncClient, sql: str, parameters: dict[str, Any]
) -> Sequence[Sequence[Any]]:
    """Rows of a parameterized query; a warehouse failure is a 503 in the error shape."""
    try:
        result = await clickhouse.query(sql, parameters=parameters)
    except ClickHouseError as exc:
        raise ApiError(503, "warehouse_error", f"query failed: {exc}") from exc
    return result.result_rows


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_clickhouse(request: Request) -> AsyncClient:
    warehouse: Warehouse = request.app.state.warehouse
    return await warehouse.client()


async def get_book(request: Request) -> PriceBook:
    book: PriceBook = request.app.state.price_book
    return book


def get_hub(connection: HTTPConnection) -> Hub:
    hub: Hub = connection.app.state.hub
    return hub


SettingsDep = Annotated[Settings, Depends(get_settings)]
PriceBookDep = Annotated[PriceBook, Depends(get_book)]
ClickHouseDep = Annotated[AsyncClient, Depends(get_clickhouse)]
