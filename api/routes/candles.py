"""`GET /v1/candles`: closed candles of one exchange, symbol and interval over a range."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.cursor import CURSOR_HEADERS, set_next_cursor
from api.deps import ClickHouseDep, SettingsDep, query_rows
from api.errors import ErrorPublic
from api.series import SeriesDep
from schemas.events import Candle
from sinks.warehouse import database_name

router = APIRouter(prefix="/v1/candles", tags=["candles"])

CANDLE_COLUMNS = [
    name if name not in ("open_time", "close_time") else f"toUnixTimestamp64Milli({name})"
    for name in Candle.model_fields
]


@router.get(
    "",
    response_model=list[Candle],
    responses={
        200: {"headers": CURSOR_HEADERS},
        422: {"model": ErrorPublic},
        503: {"model": ErrorPublic},
    },
)
async def list_candles(
    settings: SettingsDep, clickhouse: ClickHouseDep, series: SeriesDep, response: Response
) -> list[Candle]:
    """Candles in time order; the newest window appears once the watermark closes it.

    A full page sets `X-Next-Cursor`; pass it as `cursor` for the next one."""
    sql = (
        f"SELECT {', '.join(CANDLE_COLUMNS)} FROM {database_name(settings)}.candles FINAL "
        f"WHERE {series.where} ORDER BY open_time LIMIT {{limit:UInt32}}"
    )
    rows = await query_rows(clickhouse, sql, series.parameters())
    fields = list(Candle.model_fields)
    candles = [Candle(**dict(zip(fields, row, strict=True))) for row in rows]
    if candles:
        set_next_cursor(response, len(candles), series.limit, [candles[-1].open_time])
    return candles
