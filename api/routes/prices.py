"""`GET /v1/prices/latest`: last prices per symbol and exchange, from memory.

Served from the price book the API's topic consumer keeps (filled from the warehouse on
a cold start), so it answers in microseconds and stays up while the warehouse is busy.
"""

from __future__ import annotations

import re
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response

from api.errors import ApiError, ErrorPublic
from api.feed import now_ms
from api.pricebook import PriceBook
from schemas.api import SymbolPricePublic
from schemas.events import ExchangeId

router = APIRouter(prefix="/v1/prices", tags=["prices"])

SYMBOL = re.compile(r"[A-Z0-9]+-[A-Z0-9]+")
MAX_SYMBOLS = 100


def parse_symbols(text: str | None) -> set[str] | None:
    """`BTC-USD,ETH-USDT` as a set; 422 naming the first malformed symbol."""
    if text is None:
        return None
    symbols = {part.strip() for part in text.split(",") if part.strip()}
    for symbol in sorted(symbols):
        if not SYMBOL.fullmatch(symbol):
            raise ApiError(
                422, "invalid_symbol", f"symbols: {symbol!r} is not BASE-QUOTE, e.g. BTC-USDT"
            )
    if len(symbols) > MAX_SYMBOLS:
        raise ApiError(422, "invalid_symbol", f"symbols: at most {MAX_SYMBOLS} at once")
    return symbols


@router.get(
    "/latest",
    response_model=list[SymbolPricePublic],
    responses={422: {"model": ErrorPublic}},
)
async def latest_prices(
    request: Request,
    symbols: Annotated[
        str | None,
        Query(
            max_length=2_000,
            description="Comma-separated `BASE-QUOTE` symbols, e.g. `BTC-USD,ETH-USDT`; "
            "all symbols when absent.",
        ),
    ] = None,
    exchange: ExchangeId | None = None,
) -> Response:
    """Per symbol: the median of the exchanges' last prices, their spread, and each
    exchange's last trade with its age. Unknown symbols are simply absent."""
    # Serialized directly: the book already has the documented shape (the schema test
    # checks every answer against it), and re-validating it would halve the throughput.
    book: PriceBook = request.app.state.price_book  # not a dependency: ~25 µs less
    latest = book.latest(now_ms(), parse_symbols(symbols), exchange)
    return Response(orjson.dumps(latest), media_type="application/json")
