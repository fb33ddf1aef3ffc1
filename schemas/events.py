"""Event models carried on sigflow topics (pydantic v2: the documented contract).

Timestamps are integer epoch milliseconds in UTC everywhere on the wire: one unit, no
time zone ambiguity, and they map one-to-one onto ClickHouse `DateTime64(3, 'UTC')`.
Prices and sizes are IEEE doubles; on-chain token amounts are exact decimals sent as
strings, because a float cannot hold an 18-decimal token amount.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Side = Literal["buy", "sell"]
EpochMillis = Annotated[int, Field(ge=0, description="Epoch milliseconds, UTC.")]
ExchangeId = Annotated[
    str, Field(pattern=r"^[a-z0-9_]+$", description="Lower-case exchange id, e.g. `binance`.")
]
Symbol = Annotated[
    str,
    Field(
        pattern=r"^[A-Z0-9]+-[A-Z0-9]+$", description="Normalized `BASE-QUOTE`, e.g. `BTC-USDT`."
    ),
]


class Event(BaseModel):
    """Shared configuration: events are immutable and reject unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Trade(Event):
    """One executed trade, normalized from any exchange (topic `trades`)."""

    exchange: ExchangeId
    symbol: Symbol
    trade_id: str = Field(min_length=1, description="The exchange's own trade id.")
    price: float = Field(gt=0, description="Execution price in the quote currency.")
    size: float = Field(gt=0, description="Executed quantity in the base currency.")
    side: Side = Field(description="Taker side: `buy` means the taker bought.")
    ts: EpochMillis = Field(description="Event time at the exchange, epoch ms.")
    received_ts: EpochMillis = Field(description="When sigflow received it, epoch ms.")


class Candle(Event):
    """OHLCV of one event-time window for one exchange and symbol (topic `candles`)."""

    exchange: ExchangeId
    symbol: Symbol
    interval: str = Field(pattern=r"^[0-9]+[smhd]$", description="Window length, e.g. `1m`.")
    open_time: EpochMillis = Field(description="Window start (inclusive), epoch ms.")
    close_time: EpochMillis = Field(description="Window end (exclusive), epoch ms.")
    open: float = Field(gt=0)
    high: float = Field(gt=0)
    low: float = Field(gt=0)
    close: float = Field(gt=0)
    volume: float = Field(ge=0, description="Base volume.")
    quote_volume: float = Field(ge=0, description="Quote volume, sum of price x size.")
    vwap: float = Field(gt=0, description="Volume-weighted average price.")
    trade_count: int = Field(ge=1)
    buy_volume: float = Field(ge=0, description="Base volume of taker buys.")
    sell_volume: float = Field(ge=0, description="Base volume of taker sells.")
    final: bool = Field(description="True once the window closed under the watermark.")


class IndicatorValues(Event):
    """Indicators computed on one closed candle (topic `indicators`).

    `values` holds the canonical names (`sma_20`, `ema_12`, `ema_26`, `rsi_14`, `macd`,
    `macd_signal`, `macd_hist`, `bb_upper`, `bb_middle`, `bb_lower`, `atr_14`,
    `realized_vol_30`, `vwap`) that are warmed up; TA-Lib's conventions throughout.
    """

    exchange: ExchangeId
    symbol: Symbol
    interval: str = Field(pattern=r"^[0-9]+[smhd]$")
    open_time: EpochMillis = Field(description="Open time of the candle they were computed on.")
    values: dict[str, float] = Field(description="Indicator name to value.")


class Signal(Event):
    """A rule fired on a closed candle (topic `signals`): direction, strength and why."""

    exchange: ExchangeId
    symbol: Symbol
    interval: str = Field(pattern=r"^[0-9]+[smhd]$")
    open_time: EpochMillis = Field(description="Open time of the candle the rule fired on.")
    rule: str = Field(min_length=1, description="Id of the rule in the rules file.")
    direction: Literal[1, -1] = Field(description="1 bullish, -1 bearish.")
    strength: float = Field(gt=0, le=1, description="How decisive the crossing was, 0-1.")
    price: float = Field(gt=0, description="Close of the candle the rule fired on.")
    explanation: str = Field(description="Plain-language reason, with the numbers.")


Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
AnomalyKind = Literal[
    "price_jump",
    "volume_spike",
    "stale_feed",
    "divergence",
    "whale_transfer",
    "gas_spike",
    "reorg",
]


class Anomaly(Event):
    """Something unusual, scored against what was expected (topic `anomalies`).

    Market anomalies carry `exchange`/`symbol` (and `interval` when they were scored on
    candles); chain anomalies carry `chain_id` (a whale transfer also names the market
    that priced it in `exchange`/`symbol`). `anomaly_id` is deterministic, so a replay
    re-emits the same id and every consumer can de-duplicate on it.
    """

    anomaly_id: str = Field(
        min_length=1,
        description="Deterministic id: kind:subject[:interval]:ts; chain kinds end with a "
        "reference instead of ts (gas_spike: block hash, reorg: first orphaned block hash, "
        "whale_transfer: tx_hash:log_index).",
    )
    kind: AnomalyKind
    subject: str = Field(
        min_length=1, description="What it is about: `exchange:symbol`, `symbol` or `chain:N`."
    )
    exchange: ExchangeId | None = None
    symbol: Symbol | None = None
    interval: str | None = Field(
        None, pattern=r"^[0-9]+[smhd]$", description="Candle interval it was scored on."
    )
    chain_id: int | None = Field(None, ge=1)
    ts: EpochMillis = Field(
        description="Event time of the observation (a candle's open time), epoch ms."
    )
    score: float = Field(ge=0, description="How far from expected (e.g. robust z-score).")
    severity: Severity
    observed: float = Field(description="The observed value (return, volume, gap, USD ...).")
    expected: float = Field(description="What was expected for it.")
    explanation: str = Field(description="Plain-language reason, with the numbers.")


class Alert(Event):
    """What an alert rule decided to tell the outside world (topic `alerts`, webhooks).

    `alert_id` is deterministic (rule and source event), so it doubles as the webhook
    idempotency key: a replay or a retry never looks like a new alert to a receiver.
    """

    alert_id: str = Field(min_length=1, description="Deterministic id: rule:source event id.")
    rule: str = Field(min_length=1, description="Id of the alert rule that fired.")
    source: Literal["signal", "anomaly"]
    kind: str = Field(min_length=1, description="Signal rule or anomaly kind behind the alert.")
    severity: Severity
    subject: str = Field(min_length=1, description="`exchange:symbol`, `symbol` or `chain:N`.")
    exchange: ExchangeId | None = None
    symbol: Symbol | None = None
    chain_id: int | None = Field(None, ge=1)
    ts: EpochMillis = Field(description="Event time of the source event, epoch ms.")
    title: str = Field(min_length=1, description="One-line summary for a notification.")
    explanation: str = Field(description="Why it fired, with the numbers.")
    score: float | None = Field(None, description="Anomaly score, when the source is one.")
    direction: Literal[1, -1] | None = Field(None, description="Signal direction, when one.")
    price: float | None = Field(None, gt=0, description="Price at the source event, if any.")


DeliveryStatus = Literal["pending", "delivered", "retrying", "failed"]


class PendingDelivery(Event):
    """One alert for one webhook subscription, between attempts or given up.

    On `webhooks.retry` it is a delivery waiting for attempt `attempt` (not before
    `due_at`); on `webhooks.dlq` it is one that failed for good (`attempt` was its last,
    `last_error` says why). `webhook_id` is stable across retries and redeliveries.
    """

    webhook_id: str = Field(min_length=1, description="Stable id: the `webhook-id` header.")
    subscription_id: str = Field(min_length=1)
    alert: Alert
    attempt: int = Field(ge=1, description="Attempt number this record is about (1 = first).")
    last_attempt: int = Field(ge=1, description="After this attempt the delivery is dead-lettered.")
    due_at: EpochMillis = Field(description="Not attempted before this time, epoch ms.")
    last_status_code: int | None = Field(None, description="HTTP status of the previous try.")
    last_error: str | None = Field(None, description="Why the previous try failed.")


class OnchainBlock(Event):
    """One EVM block as seen by the chain ingestor (topic `onchain.blocks`)."""

    chain_id: int = Field(ge=1)
    number: int = Field(ge=0)
    hash: str = Field(pattern=r"^0x[0-9a-f]{64}$")
    parent_hash: str = Field(pattern=r"^0x[0-9a-f]{64}$")
    timestamp: EpochMillis
    base_fee: int | None = Field(None, ge=0, description="Base fee per gas in wei (EIP-1559).")
    gas_used: int = Field(ge=0)
    tx_count: int = Field(ge=0)
    status: Literal["new", "confirmed", "reorged"] = Field(
        description="`new` when first seen, `confirmed` once `confirmations` reached the "
        "configured depth, `reorged` when a reorganization orphaned it."
    )
    confirmations: int = Field(
        ge=0, description="Blocks on the canonical chain from this one to the head (0: reorged)."
    )


class OnchainTransfer(Event):
    """One ERC-20 `Transfer` log (topic `onchain.transfers`)."""

    chain_id: int = Field(ge=1)
    block: int = Field(ge=0)
    block_hash: str = Field(pattern=r"^0x[0-9a-f]{64}$")
    timestamp: EpochMillis
    tx_hash: str = Field(pattern=r"^0x[0-9a-f]{64}$")
    log_index: int = Field(ge=0)
    token: str = Field(pattern=r"^0x[0-9a-f]{40}$", description="Token contract address.")
    token_symbol: str
    from_address: str = Field(pattern=r"^0x[0-9a-f]{40}$")
    to_address: str = Field(pattern=r"^0x[0-9a-f]{40}$")
    amount: Decimal = Field(ge=0, description="Decimal-adjusted token amount, exact.")
    usd_value: float | None = Field(None, ge=0, description="Amount in USD at sigflow's price.")
    confirmations: int = Field(
        ge=0, description="Blocks on the canonical chain from its block to the head (0: removed)."
    )
    removed: bool = Field(
        False, description="True when a reorg orphaned this log: it retracts the earlier record."
    )


class DeadLetter(Event):
    """A rejected input and why (topic `dlq`); the raw bytes are kept to replay later."""

    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    raw: str = Field(description="The rejected bytes: UTF-8 text, or base64 (see raw_encoding).")
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    reason: str = Field(description="Why it was rejected, for a person.")
    error_kind: str = Field(description="Machine-readable class: `schema`, `late`, ...")
    component: str = Field(description="Which sigflow role rejected it.")
    rejected_at: EpochMillis
