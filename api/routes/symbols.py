"""`GET /v1/symbols`: every exchange/symbol pair with candles or live trades."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.cursor import CURSOR_HEADERS, CursorParam, decode_cursor, set_next_cursor
from api.deps import ClickHouseDep, PriceBookDep, SettingsDep, query_rows
from api.errors import ErrorPublic
from schemas.api import SymbolPublic
from sinks.warehouse import database_name

router = APIRouter(prefix="/v1/symbols", tags=["symbols"])

SEEN_SQL = (
    "SELECT exchange, symbol, toUnixTimestamp64Milli(min(open_time)), "
    "toUnixTimestamp64Milli(max(close_time)) FROM {db}.candles GROUP BY exchange, symbol"
)


@router.get(
    "",
    response_model=list[SymbolPublic],
    responses={
        200: {"headers": CURSOR_HEADERS},
        422: {"model": ErrorPublic},
        503: {"model": ErrorPublic},
    },
)
async def list_symbols(
    settings: SettingsDep,
    clickhouse: ClickHouseDep,
    book: PriceBookDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
    cursor: CursorParam = None,
) -> list[SymbolPublic]:
    """By exchange, then symbol. First seen is the first candle; last seen is the newer
    of the last candle's close and the last trade the API saw on the stream."""
    seen: dict[tuple[str, str], tuple[int, int]] = {
        (exchange, symbol): (first, last)
        for exchange, symbol, first, last in await query_rows(
            clickhouse, SEEN_SQL.format(db=database_name(settings)), {}
        )
    }
    for trade in book.trades():
        first, last = seen.get((trade.exchange, trade.symbol), (trade.ts, trade.ts))
        seen[(trade.exchange, trade.symbol)] = (min(first, trade.ts), max(last, trade.ts))
    after = tuple(decode_cursor(cursor, [str, str])) if cursor is not None else None
    keys = sorted(key for key in seen if after is None or key > after)[:limit]
    page = [
        SymbolPublic(exchange=e, symbol=s, first_seen=seen[e, s][0], last_seen=seen[e, s][1])
        for e, s in keys
    ]
    if keys:
        set_next_cursor(response, len(keys), limit, list(keys[-1]))
    return page
