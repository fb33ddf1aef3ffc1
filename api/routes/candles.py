"""`GET /v1/candles`: closed candles of one exchange, symbol and interval over a range."""

from __future__ import annotations

from typing import Annotated

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import APIRouter, Query

from api.deps import ClickHouseDep, SettingsDep
from api.errors import ApiError, ErrorPublic
from api.timeparams import parse_time_ms
from processors.candles import interval_ms
from schemas.events import Candle, ExchangeId, Symbol
from sinks.warehouse import database_name

router = APIRouter(prefix="/v1/candles", tags=["candles"])

CANDLE_COLUMNS = [
    name if name not in ("open_time", "close_time") else f"toUnixTimestamp64Milli({name})"
    for name in Candle.model_fields
]


@router.get(
    "",
    response_model=list[Candle],
    responses={422: {"model": ErrorPublic}, 503: {"model": ErrorPublic}},
)
async def list_candles(
    settings: SettingsDep,
    clickhouse: ClickHouseDep,
    exchange: ExchangeId,
    symbol: Symbol,
    interval: Annotated[str, Query(description="Window length, e.g. `1m`.")] = "1m",
    start: Annotated[
        str | None, Query(description="From (inclusive): ISO-8601 or epoch ms.")
    ] = None,
    end: Annotated[str | None, Query(description="To (exclusive): ISO-8601 or epoch ms.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> list[Candle]:
    """Candles in time order; the newest window appears once the watermark closes it."""
    try:
        interval_ms(interval)
    except ValueError as exc:
        raise ApiError(422, "invalid_interval", str(exc)) from None
    start_ms = parse_time_ms("start", start) if start is not None else 0
    end_ms = parse_time_ms("end", end) if end is not None else 2**62
    if end_ms <= start_ms:
        raise ApiError(422, "invalid_range", "end must be after start")
    sql = (
        f"SELECT {', '.join(CANDLE_COLUMNS)} FROM {database_name(settings)}.candles FINAL "
        "WHERE exchange = {exchange:String} AND symbol = {symbol:String} "
        "AND interval = {interval:String} "
        "AND open_time >= fromUnixTimestamp64Milli({start:Int64}) "
        "AND open_time < fromUnixTimestamp64Milli({end:Int64}) "
        "ORDER BY open_time LIMIT {limit:UInt32}"
    )
    parameters = {
        "exchange": exchange,
        "symbol": symbol,
        "interval": interval,
        "start": start_ms,
        "end": min(end_ms, 2**62),
        "limit": limit,
    }
    try:
        result = await clickhouse.query(sql, parameters=parameters)
    except ClickHouseError as exc:
        raise ApiError(503, "warehouse_error", f"query failed: {exc}") from exc
    fields = list(Candle.model_fields)
    return [Candle(**dict(zip(fields, row, strict=True))) for row in result.result_rows]
