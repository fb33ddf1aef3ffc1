"""`GET /v1/signals`: the newest trading signals, optionally filtered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.cursor import CURSOR_HEADERS, CursorParam, decode_cursor, set_next_cursor
from api.deps import ClickHouseDep, SettingsDep, query_rows
from api.errors import ApiError, ErrorPublic
from api.timeparams import time_range
from schemas.events import ExchangeId, Signal, Symbol
from sinks.warehouse import database_name

router = APIRouter(prefix="/v1/signals", tags=["signals"])

SIGNAL_COLUMNS = [
    "toUnixTimestamp64Milli(open_time)" if name == "open_time" else name
    for name in Signal.model_fields
]
# Each optional filter is a fixed SQL fragment bound to a server-side parameter.
FILTERS = {
    "exchange": "exchange = {exchange:String}",
    "symbol": "symbol = {symbol:String}",
    "interval": "interval = {interval:String}",
    "rule": "rule = {rule:String}",
    "direction": "direction = {direction:Int8}",
}
# Newest first, ties broken by the rest of the natural key, so a cursor is exact.
SORT_KEY = "(open_time, exchange, symbol, interval, rule)"
AFTER_CURSOR = (
    f"{SORT_KEY} < (fromUnixTimestamp64Milli({{c_time:Int64}}), {{c_exchange:String}}, "
    "{c_symbol:String}, {c_interval:String}, {c_rule:String})"
)
CURSOR_TYPES = [int, str, str, str, str]


@router.get(
    "",
    response_model=list[Signal],
    responses={
        200: {"headers": CURSOR_HEADERS},
        422: {"model": ErrorPublic},
        503: {"model": ErrorPublic},
    },
)
async def list_signals(
    settings: SettingsDep,
    clickhouse: ClickHouseDep,
    response: Response,
    exchange: ExchangeId | None = None,
    symbol: Symbol | None = None,
    interval: Annotated[str | None, Query(pattern=r"^[0-9]+[smhd]$")] = None,
    rule: Annotated[str | None, Query(max_length=100)] = None,
    direction: Annotated[
        int | None, Query(ge=-1, le=1, description="1 bullish, -1 bearish.")
    ] = None,
    start: Annotated[str | None, Query(description="From (inclusive): ISO-8601/epoch ms.")] = None,
    end: Annotated[str | None, Query(description="To (exclusive): ISO-8601/epoch ms.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    cursor: CursorParam = None,
) -> list[Signal]:
    """Newest first: what fired, on which candle, how strongly and why.

    A full page sets `X-Next-Cursor`; pass it as `cursor` for the next one."""
    if direction == 0:
        raise ApiError(422, "invalid_direction", "direction must be 1 (bullish) or -1 (bearish)")
    start_ms, end_ms = time_range(start, end)
    given = {
        "exchange": exchange,
        "symbol": symbol,
        "interval": interval,
        "rule": rule,
        "direction": direction,
    }
    conditions = [FILTERS[name] for name, value in given.items() if value is not None]
    after: dict[str, object] = {}
    if cursor is not None:
        conditions.append(AFTER_CURSOR)
        names = ["c_time", "c_exchange", "c_symbol", "c_interval", "c_rule"]
        after = dict(zip(names, decode_cursor(cursor, CURSOR_TYPES), strict=True))
    sql = (
        f"SELECT {', '.join(SIGNAL_COLUMNS)} FROM {database_name(settings)}.signals FINAL "
        "WHERE open_time >= fromUnixTimestamp64Milli({start:Int64}) "
        "AND open_time < fromUnixTimestamp64Milli({end:Int64}) "
        + "".join(f"AND {condition} " for condition in conditions)
        + f"ORDER BY {SORT_KEY} DESC LIMIT {{limit:UInt32}}"
    )
    parameters = {
        **{name: value for name, value in given.items() if value is not None},
        "start": start_ms,
        "end": end_ms,
        "limit": limit,
        **after,
    }
    rows = await query_rows(clickhouse, sql, parameters)
    fields = list(Signal.model_fields)
    signals = [Signal(**dict(zip(fields, row, strict=True))) for row in rows]
    if signals:
        last = signals[-1]
        key = [last.open_time, last.exchange, last.symbol, last.interval, last.rule]
        set_next_cursor(response, len(signals), limit, key)
    return signals
