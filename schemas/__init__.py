"""The public contract: event models, the topic registry and JSON Schema export."""

from __future__ import annotations

from schemas.events import (
    Alert,
    Anomaly,
    Candle,
    DeadLetter,
    IndicatorValues,
    OnchainBlock,
    OnchainTransfer,
    PendingDelivery,
    Side,
    Signal,
    Trade,
)
from schemas.topics import TOPICS, TopicSpec

__all__ = [
    "TOPICS",
    "Alert",
    "Anomaly",
    "Candle",
    "DeadLetter",
    "IndicatorValues",
    "OnchainBlock",
    "OnchainTransfer",
    "PendingDelivery",
    "Side",
    "Signal",
    "TopicSpec",
    "Trade",
]
