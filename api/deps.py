"""Dependencies shared by the routers: settings and the warehouse client."""

from __future__ import annotations

import asyncio
from typing import Annotated

from clickhouse_connect.driver.asyncclient import AsyncClient
from fastapi import Depends, Request

from api.errors import ApiError
from sigflow.exceptions import StackError
from sigflow.settings import Settings
from sinks.warehouse import connect


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


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_clickhouse(request: Request) -> AsyncClient:
    warehouse: Warehouse = request.app.state.warehouse
    return await warehouse.client()


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClickHouseDep = Annotated[AsyncClient, Depends(get_clickhouse)]
