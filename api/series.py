"""The query parameters every time-series endpoint shares, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query

from api.cursor import CursorParam, decode_cursor
from api.errors import ApiError
from api.timeparams import time_range
from processors.candles import interval_ms
from schemas.events import ExchangeId, Symbol


@dataclass(frozen=True)
class SeriesWindow:
    """One exchange/symbol/interval series between two times, at most `limit` points."""

    exchange: str
    symbol: str
    interval: str
    start_ms: int
    end_ms: int
    limit: int
    after_ms: int | None = None  # from a cursor: only open times after this one

    def parameters(self) -> dict[str, Any]:
        """Server-side query parameters for `{exchange:String}`, `{start:Int64}`, ..."""
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "interval": self.interval,
            "start": self.start_ms,
            "end": self.end_ms,
            "limit": self.limit,
            "after": self.after_ms if self.after_ms is not None else -1,
        }

    @property
    def where(self) -> str:
        """The SQL condition selecting the window (and what follows the cursor)."""
        after = " AND open_time > fromUnixTimestamp64Milli({after:Int64})"
        return WHERE_SERIES + (after if self.after_ms is not None else "")


WHERE_SERIES = (
    "exchange = {exchange:String} AND symbol = {symbol:String} "
    "AND interval = {interval:String} "
    "AND open_time >= fromUnixTimestamp64Milli({start:Int64}) "
    "AND open_time < fromUnixTimestamp64Milli({end:Int64})"
)


async def series_window(
    exchange: ExchangeId,
    symbol: Symbol,
    interval: Annotated[str, Query(description="Window length, e.g. `1m`.")] = "1m",
    start: Annotated[
        str | None, Query(description="From (inclusive): ISO-8601 or epoch ms.")
    ] = None,
    end: Annotated[str | None, Query(description="To (exclusive): ISO-8601 or epoch ms.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
    cursor: CursorParam = None,
) -> SeriesWindow:
    """Validate the shared parameters; 422 in the error shape when they are wrong."""
    try:
        interval_ms(interval)
    except ValueError as exc:
        raise ApiError(422, "invalid_interval", str(exc)) from None
    start_ms, end_ms = time_range(start, end)
    after_ms = decode_cursor(cursor, [int])[0] if cursor is not None else None
    return SeriesWindow(exchange, symbol, interval, start_ms, end_ms, limit, after_ms)


SeriesDep = Annotated[SeriesWindow, Depends(series_window)]
