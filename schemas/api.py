"""Response models of the HTTP API that are not topic events (the events are in `events`).

Prices are served from the API's in-memory view of the `trades` topic, so each price
says where it came from (`stream`, or `warehouse` when it was loaded on a cold start)
and how old it is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import EpochMillis, ExchangeId, Side, Symbol


class PublicModel(BaseModel):
    """Responses are immutable and carry exactly their documented fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ExchangePricePublic(PublicModel):
    """One exchange's last trade of a symbol."""

    exchange: ExchangeId
    price: float = Field(gt=0, description="Price of the exchange's last trade.")
    size: float = Field(gt=0, description="Size of that trade, base currency.")
    side: Side
    ts: EpochMillis = Field(description="Event time of that trade, epoch ms.")
    age_ms: int = Field(description="Now minus `ts`: how old the price is, ms.")
    behind_ms: int = Field(
        ge=0, description="How far this trade is behind the symbol's newest trade, ms."
    )
    included: bool = Field(
        description="Counted in the cross-exchange price (false: too far behind)."
    )
    source: Literal["stream", "warehouse"] = Field(
        description="`stream`: seen on the trades topic; `warehouse`: loaded at start."
    )


class SymbolPricePublic(PublicModel):
    """The latest price of one symbol: per exchange and aggregated across them."""

    symbol: Symbol
    price: float = Field(gt=0, description="Median of the included exchanges' last prices.")
    low: float = Field(gt=0, description="Lowest included last price.")
    high: float = Field(gt=0, description="Highest included last price.")
    spread_bps: float = Field(ge=0, description="(high - low) / price in basis points.")
    ts: EpochMillis = Field(description="Event time of the newest trade of the symbol.")
    age_ms: int = Field(description="Now minus `ts`, ms.")
    exchanges: list[ExchangePricePublic] = Field(description="Per exchange, by exchange id.")


class SymbolPublic(PublicModel):
    """An exchange/symbol pair sigflow has seen, and when."""

    exchange: ExchangeId
    symbol: Symbol
    first_seen: EpochMillis = Field(description="Open time of its first candle, epoch ms.")
    last_seen: EpochMillis = Field(description="Its newest candle close or trade, epoch ms.")
