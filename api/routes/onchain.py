"""`GET /v1/onchain/transfers`: large and recent ERC-20 transfers on the canonical chain.

Reads `onchain_transfers_canonical`, so a transfer a reorg retracted never shows.
`confirmations` is the count when the feed last published the transfer: the feed
publishes it again once it reaches the configured depth, so "confirmed" is exact.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api.cursor import CURSOR_HEADERS, CursorParam, decode_cursor, set_next_cursor
from api.deps import ClickHouseDep, SettingsDep, query_rows
from api.errors import ErrorPublic
from api.timeparams import time_range
from schemas.events import OnchainTransfer
from sinks.warehouse import database_name

router = APIRouter(prefix="/v1/onchain", tags=["onchain"])

ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
TRANSFER_COLUMNS = [
    "toUnixTimestamp64Milli(timestamp)" if name == "timestamp" else name
    for name in OnchainTransfer.model_fields
]
FILTERS = {
    "chain_id": "chain_id = {chain_id:UInt64}",
    "token_address": "token = {token_address:String}",
    "token_symbol": "lower(token_symbol) = lower({token_symbol:String})",
    "min_usd": "usd_value >= {min_usd:Float64}",  # NULL (no USD value) never passes
    "min_confirmations": "confirmations >= {min_confirmations:UInt32}",
}
# Newest first; (chain, block hash, log index) identifies a log, so the cursor is exact.
SORT_KEY = "(timestamp, chain_id, block_hash, log_index)"
AFTER_CURSOR = (
    f"{SORT_KEY} < (fromUnixTimestamp64Milli({{c_time:Int64}}), {{c_chain:Int64}}, "
    "{c_hash:String}, {c_index:Int64})"
)


def plain_decimal(amount: Decimal) -> Decimal:
    """`1500` rather than the column's `1500.000…` (30 fraction digits), still exact."""
    return Decimal(format(amount.normalize(), "f"))


def transfer(row: Sequence[Any]) -> OnchainTransfer:
    values = dict(zip(OnchainTransfer.model_fields, row, strict=True))
    values["amount"] = plain_decimal(values["amount"])
    return OnchainTransfer(**values)


@router.get(
    "/transfers",
    response_model=list[OnchainTransfer],
    responses={
        200: {"headers": CURSOR_HEADERS},
        422: {"model": ErrorPublic},
        503: {"model": ErrorPublic},
    },
)
async def list_transfers(
    settings: SettingsDep,
    clickhouse: ClickHouseDep,
    response: Response,
    chain_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    token: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            description="Token contract address (`0x…`) or symbol (e.g. `USDC`, any case).",
        ),
    ] = None,
    min_usd: Annotated[
        float | None,
        Query(
            ge=0,
            le=1e300,
            description="Only transfers worth at least this many USD "
            "(transfers without a USD value are left out).",
        ),
    ] = None,
    confirmed: Annotated[
        bool, Query(description="Only transfers with at least `confirmations` confirmations.")
    ] = False,
    confirmations: Annotated[
        int | None,
        Query(
            ge=1,
            le=1_000_000,
            description="Depth for `confirmed` (default: the server's "
            "`chain_confirmations`); giving it implies `confirmed`.",
        ),
    ] = None,
    start: Annotated[str | None, Query(description="From (inclusive): ISO-8601/epoch ms.")] = None,
    end: Annotated[str | None, Query(description="To (exclusive): ISO-8601/epoch ms.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    cursor: CursorParam = None,
) -> list[OnchainTransfer]:
    """Newest first (by block time): who sent how much of which token, and its USD value.

    A full page sets `X-Next-Cursor`; pass it as `cursor` for the next one."""
    start_ms, end_ms = time_range(start, end)
    is_address = token is not None and ADDRESS.fullmatch(token) is not None
    depth = confirmations if confirmations is not None else settings.chain_confirmations
    given = {
        "chain_id": chain_id,
        "token_address": token.lower() if token is not None and is_address else None,
        "token_symbol": token if not is_address else None,
        "min_usd": min_usd,
        "min_confirmations": depth if confirmed or confirmations is not None else None,
    }
    parameters: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    conditions = [FILTERS[name] for name in parameters]
    if cursor is not None:
        conditions.append(AFTER_CURSOR)
        key = decode_cursor(cursor, [int, int, str, int])
        parameters.update(zip(["c_time", "c_chain", "c_hash", "c_index"], key, strict=True))
    sql = (
        f"SELECT {', '.join(TRANSFER_COLUMNS)} "
        f"FROM {database_name(settings)}.onchain_transfers_canonical "
        "WHERE timestamp >= fromUnixTimestamp64Milli({start:Int64}) "
        "AND timestamp < fromUnixTimestamp64Milli({end:Int64}) "
        + "".join(f"AND {condition} " for condition in conditions)
        + f"ORDER BY {SORT_KEY} DESC LIMIT {{limit:UInt32}}"
    )
    rows = await query_rows(
        clickhouse, sql, {**parameters, "start": start_ms, "end": end_ms, "limit": limit}
    )
    transfers = [transfer(row) for row in rows]
    if transfers:
        last = transfers[-1]
        key = [last.timestamp, last.chain_id, last.block_hash, last.log_index]
        set_next_cursor(response, len(transfers), limit, key)
    return transfers
