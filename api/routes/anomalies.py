"""`GET /v1/anomalies`: the newest anomalies, optionally filtered (what the dashboard lists)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.cursor import CURSOR_HEADERS, CursorParam, decode_cursor, set_next_cursor
from api.deps import ClickHouseDep, SettingsDep, query_rows
from api.errors import ErrorPublic
from api.timeparams import time_range
from schemas.events import SEVERITY_RANK, Anomaly, AnomalyKind, ExchangeId, Severity, Symbol
from sinks.warehouse import database_name

router = APIRouter(prefix="/v1/anomalies", tags=["anomalies"])

ANOMALY_COLUMNS = [
    "toUnixTimestamp64Milli(ts)" if name == "ts" else name for name in Anomaly.model_fields
]
# Each optional filter is a fixed SQL fragment bound to a server-side parameter.
FILTERS = {
    "kind": "kind = {kind:String}",
    "symbol": "symbol = {symbol:String}",
    "exchange": "exchange = {exchange:String}",
    "chain_id": "chain_id = {chain_id:UInt64}",
    "min_rank": "toInt8(severity) >= {min_rank:Int8}",  # Enum8 values are the ranks
}
# Newest first; the id is unique, so (ts, id) is an exact cursor.
AFTER_CURSOR = "(ts, anomaly_id) < (fromUnixTimestamp64Milli({c_time:Int64}), {c_id:String})"


@router.get(
    "",
    response_model=list[Anomaly],
    responses={
        200: {"headers": CURSOR_HEADERS},
        422: {"model": ErrorPublic},
        503: {"model": ErrorPublic},
    },
)
async def list_anomalies(
    settings: SettingsDep,
    clickhouse: ClickHouseDep,
    response: Response,
    kind: AnomalyKind | None = None,
    symbol: Symbol | None = None,
    exchange: ExchangeId | None = None,
    chain_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    min_severity: Annotated[
        Severity | None, Query(description="Only this severity and above.")
    ] = None,
    start: Annotated[str | None, Query(description="From (inclusive): ISO-8601/epoch ms.")] = None,
    end: Annotated[str | None, Query(description="To (exclusive): ISO-8601/epoch ms.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    cursor: CursorParam = None,
) -> list[Anomaly]:
    """Newest first (by event time): what was unusual, how far from expected, and why.

    A full page sets `X-Next-Cursor`; pass it as `cursor` for the next one."""
    start_ms, end_ms = time_range(start, end)
    given = {
        "kind": kind,
        "symbol": symbol,
        "exchange": exchange,
        "chain_id": chain_id,
        "min_rank": None if min_severity is None else SEVERITY_RANK[min_severity],
    }
    parameters = {name: value for name, value in given.items() if value is not None}
    conditions = [FILTERS[name] for name in parameters]
    if cursor is not None:
        conditions.append(AFTER_CURSOR)
        parameters["c_time"], parameters["c_id"] = decode_cursor(cursor, [int, str])
    sql = (
        f"SELECT {', '.join(ANOMALY_COLUMNS)} FROM {database_name(settings)}.anomalies FINAL "
        "WHERE ts >= fromUnixTimestamp64Milli({start:Int64}) "
        "AND ts < fromUnixTimestamp64Milli({end:Int64}) "
        + "".join(f"AND {condition} " for condition in conditions)
        + "ORDER BY ts DESC, anomaly_id DESC LIMIT {limit:UInt32}"
    )
    rows = await query_rows(
        clickhouse, sql, {**parameters, "start": start_ms, "end": end_ms, "limit": limit}
    )
    fields = list(Anomaly.model_fields)
    anomalies = [Anomaly(**dict(zip(fields, row, strict=True))) for row in rows]
    if anomalies:
        last = anomalies[-1]
        set_next_cursor(response, len(anomalies), limit, [last.ts, last.anomaly_id])
    return anomalies
