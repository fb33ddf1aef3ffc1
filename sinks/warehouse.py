"""Connecting to ClickHouse (a server or the embedded engine) with clickhouse-connect."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, overload
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


def clickhouse_tls_options(settings: Settings) -> dict[str, Any]:
    """clickhouse-connect's TLS arguments for an https `clickhouse_url` (none for http).

    With a client certificate clickhouse-connect authenticates by certificate (mutual TLS,
    `X-ClickHouse-SSL-Certificate-Auth`) as `clickhouse_user` instead of by password.
    """
    if urlsplit(settings.clickhouse_url).scheme != "https":
        return {}
    options: dict[str, Any] = {"verify": settings.clickhouse_verify}
    if settings.clickhouse_ca_file is not None:
        options["ca_cert"] = str(settings.clickhouse_ca_file)
    if settings.clickhouse_client_cert is not None:
        options["client_cert"] = str(settings.clickhouse_client_cert)
        if settings.clickhouse_client_cert_key is not None:
            options["client_cert_key"] = str(settings.clickhouse_client_cert_key)
    return options


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
            **clickhouse_tls_options(settings),
        )
    except (ClickHouseError, OSError) as exc:
        detail = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
        hint = (
            "is it running, and do SIGFLOW_CLICKHOUSE_CA_FILE/CLIENT_CERT/VERIFY fit its TLS?"
            if url.scheme == "https"
            else "is it running? try `sigflow stack up`"
        )
        raise StackError(
            f"cannot reach ClickHouse at {settings.clickhouse_url} ({detail}); {hint}"
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
