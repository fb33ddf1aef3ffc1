"""Response models of the HTTP API that are not topic events (the events are in `events`).

Prices are served from the API's in-memory view of the `trades` topic, so each price
says where it came from (`stream`, or `warehouse` when it was loaded on a cold start)
and how old it is.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import DeliveryStatus, EpochMillis, ExchangeId, Severity, Side, Symbol


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


# ---- webhooks (the `/v1/webhooks` resource) -----------------------------------------


class WebhookCreate(PublicModel):
    """What a subscriber asks for. Empty `kinds`/`symbols` mean every kind/symbol."""

    url: str = Field(
        min_length=1,
        max_length=2_000,
        description="http(s) URL that receives the signed POSTs; it must resolve to public "
        "addresses unless the server allows private ones.",
    )
    kinds: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default=[], max_length=50, description="Alert kinds delivered, e.g. `price_jump`."
    )
    symbols: list[Symbol] = Field(default=[], max_length=200, description="Symbols delivered.")
    min_severity: Severity = Field("info", description="Lowest severity delivered.")


class WebhookPublic(PublicModel):
    """A webhook subscription as anyone may read it: never its secret."""

    subscription_id: str
    url: str
    kinds: list[str]
    symbols: list[str]
    min_severity: Severity
    enabled: bool
    disabled_reason: str = Field(description="Why it is disabled (empty when enabled).")
    created_at: EpochMillis
    updated_at: EpochMillis


class WebhookCreatedPublic(WebhookPublic):
    """The created subscription with its signing secret: the only time it is shown."""

    secret: str = Field(
        pattern=r"^whsec_", description="Standard Webhooks signing secret; store it now."
    )


class WebhookPingPublic(PublicModel):
    """How the subscriber's URL answered a signed test ping."""

    webhook_id: str = Field(description="The ping's `webhook-id` header.")
    delivered: bool = Field(description="True when the receiver answered 2xx.")
    status_code: int | None = Field(description="Receiver's HTTP status (none: no answer).")
    error: str | None = Field(description="Why it was not delivered, if it was not.")
    latency_ms: float = Field(ge=0)


class WebhookDeliveryPublic(PublicModel):
    """Where one delivery of an alert to a subscription stands: its latest attempt."""

    webhook_id: str = Field(description="Stable id: the `webhook-id` header of every attempt.")
    subscription_id: str
    alert_id: str
    attempts: int = Field(ge=0)
    status: DeliveryStatus
    status_code: int | None = Field(description="HTTP status of the latest attempt, if any.")
    error: str = Field(description="Why the latest attempt failed (empty on success).")
    last_attempt_at: EpochMillis
    next_retry_at: EpochMillis | None = Field(description="When it is tried again, if it is.")
