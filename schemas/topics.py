"""The topic registry: every sigflow topic, its key, its value model and its retention."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from schemas.events import (
    Alert,
    Anomaly,
    Candle,
    DeadLetter,
    IndicatorValues,
    OnchainBlock,
    OnchainTransfer,
    PendingDelivery,
    Signal,
    Trade,
)

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the public contract (the name is without the configurable prefix)."""

    name: str
    key: str
    value_model: type[BaseModel]
    description: str
    retention_ms: int
    partitions: int | None = None  # None: the `topic_partitions` setting
    # True: each record holds a JSON array of events sharing the record's key (a
    # high-rate topic, where per-record overhead would dominate); readers also accept
    # a single object, so any producer can write one event per record.
    batched: bool = False

    def config(self) -> dict[str, str]:
        """Kafka topic configuration sigflow creates the topic with."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": "delete"}


TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        TopicSpec(
            "trades",
            key="`exchange:symbol`",
            value_model=Trade,
            batched=True,
            description="Normalized trades from every exchange: each record holds a JSON "
            "array of trades of one `exchange:symbol`, in exchange order.",
            retention_ms=7 * DAY_MS,
        ),
        TopicSpec(
            "candles",
            key="`exchange:symbol`",
            value_model=Candle,
            description="Event-time OHLCV candles, emitted once per window when it closes.",
            retention_ms=30 * DAY_MS,
        ),
        TopicSpec(
            "indicators",
            key="`exchange:symbol`",
            value_model=IndicatorValues,
            description="Indicators on every closed candle (TA-Lib conventions), once warmed up.",
            retention_ms=30 * DAY_MS,
        ),
        TopicSpec(
            "signals",
            key="`exchange:symbol`",
            value_model=Signal,
            description="Trading signals: a configured rule fired on a closed candle.",
            retention_ms=30 * DAY_MS,
        ),
        TopicSpec(
            "anomalies",
            key="`exchange:symbol` or `chain:N`",
            value_model=Anomaly,
            description="Anomalies: kind, score, severity, observed vs expected, explanation.",
            retention_ms=30 * DAY_MS,
        ),
        TopicSpec(
            "alerts",
            key="alert rule id",
            value_model=Alert,
            description="Alerts from the alert rules; what the webhook dispatcher delivers.",
            retention_ms=30 * DAY_MS,
        ),
        TopicSpec(
            "webhooks.retry",
            key="webhook id",
            value_model=PendingDelivery,
            description="Webhook deliveries waiting for their next attempt (`due_at`).",
            retention_ms=7 * DAY_MS,
        ),
        TopicSpec(
            "webhooks.dlq",
            key="webhook id",
            value_model=PendingDelivery,
            description="Webhook deliveries that failed for good, with the last error.",
            retention_ms=30 * DAY_MS,
        ),
        TopicSpec(
            "onchain.blocks",
            key="chain id",
            value_model=OnchainBlock,
            description="EVM blocks with their finality status.",
            retention_ms=30 * DAY_MS,
        ),
        TopicSpec(
            "onchain.transfers",
            key="chain id",
            value_model=OnchainTransfer,
            description="ERC-20 Transfer logs, decimal-adjusted; `removed` after a reorg.",
            retention_ms=30 * DAY_MS,
        ),
        TopicSpec(
            "dlq",
            key="source topic",
            value_model=DeadLetter,
            description="Rejected input with its source and the reason it was rejected.",
            retention_ms=30 * DAY_MS,
        ),
    )
}
