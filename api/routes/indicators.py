"""`GET /v1/indicators`: indicator values per closed candle of one series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.cursor import CURSOR_HEADERS, set_next_cursor
from api.deps import ClickHouseDep, SettingsDep, query_rows
from api.errors import ApiError, ErrorPublic
from api.series import SeriesDep
from processors.indicators import INDICATOR_NAMES
from schemas.events import IndicatorValues
from sinks.warehouse import database_name

router = APIRouter(prefix="/v1/indicators", tags=["indicators"])


@router.get(
    "",
    response_model=list[IndicatorValues],
    responses={
        200: {"headers": CURSOR_HEADERS},
        422: {"model": ErrorPublic},
        503: {"model": ErrorPublic},
    },
)
async def list_indicators(
    settings: SettingsDep,
    clickhouse: ClickHouseDep,
    series: SeriesDep,
    response: Response,
    name: Annotated[
        list[str] | None,
        Query(
            description="Only these indicators (repeat the parameter): "
            + ", ".join(INDICATOR_NAMES)
        ),
    ] = None,
) -> list[IndicatorValues]:
    """One entry per closed candle, in time order, with the indicators warmed up by then."""
    unknown = sorted(set(name or ()) - set(INDICATOR_NAMES))
    if unknown:
        raise ApiError(
            422,
            "invalid_indicator",
            f"unknown indicator(s) {unknown}; known: {list(INDICATOR_NAMES)}",
        )
    names_filter = "AND name IN {names:Array(String)} " if name else ""
    sql = (
        "SELECT toUnixTimestamp64Milli(open_time), groupArray(name), groupArray(value) "
        f"FROM {database_name(settings)}.indicators FINAL "
        f"WHERE {series.where} {names_filter}"
        "GROUP BY open_time ORDER BY open_time LIMIT {limit:UInt32}"
    )
    parameters = {**series.parameters(), "names": name or []}
    rows = await query_rows(clickhouse, sql, parameters)
    order = {indicator: i for i, indicator in enumerate(INDICATOR_NAMES)}
    if rows:
        set_next_cursor(response, len(rows), series.limit, [rows[-1][0]])
    return [
        IndicatorValues(
            exchange=series.exchange,
            symbol=series.symbol,
            interval=series.interval,
            open_time=open_time,
            values=dict(sorted(zip(names, values, strict=True), key=lambda nv: order[nv[0]])),
        )
        for open_time, names, values in rows
    ]
