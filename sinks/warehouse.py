"""Connecting to ClickHouse (a server or the embedded engine) with clickhouse-connect."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import overload
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.exceptions import ClickHouseError

from sigflow.exceptions import ConfigError, StackError
from sigflow.settings import Settings

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def database_name(settings: Settings) -> str:
    """The configured database, checked to be a plain identifier (it is spliced into DDL)."""
    if not IDENTIFIER.match(settings.clickhouse_database):
        raise ConfigError(
            "SIGFLOW_CLICKHOUSE_DATABASE must be an identifier, "
            f"got {settings.clickhouse_database!r}"
        )
    return settings.clickhouse_database


async def connect(settings: Settings, *, database: str | None = None) -> AsyncClient:
    """An async client for the configured warehouse; `database=""` for server default."""
    url = urlsplit(settings.clickhouse_url)  # validated by Settings
    try:
        return await clickhouse_connect.get_async_client(
            host=url.hostname,
            port=url.port or (8443 if url.scheme == "https" else 8123),
            secure=url.scheme == "https",
            username=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            database=database_name(settings) if database is None else database,
        )
    except (ClickHouseError, OSError) as exc:
        raise StackError(
            f"cannot reach ClickHouse at {settings.clickhouse_url} ({exc.__class__.__name__}); "
            "is it running? try `sigflow stack up`"
        ) from exc


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """A `DateTime64(3, 'UTC')` value as read by clickhouse-connect (naive) made aware."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
