"""Publishing normalized trades (and rejected input) to Kafka."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from aiokafka.errors import KafkaError

from ingest.exceptions import IngestError
from schemas.codec import codec_for
from schemas.dead_letters import dead_letter_record
from schemas.events import Trade
from sigflow.kafka import create_producer, ensure_topics
from sigflow.settings import Settings

TRADE_CODEC = codec_for(Trade)


class TradePublisher:
    """Sends trades keyed `exchange:symbol` (per-symbol order) and rejects to the DLQ."""

    def __init__(self, settings: Settings, component: str) -> None:
        self.settings = settings
        self.component = component
        self.trades_topic = settings.topic("trades")
        self.dlq_topic = settings.topic("dlq")
        self.producer = create_producer(settings)
        self.published = 0
        self.rejected = 0

    async def __aenter__(self) -> TradePublisher:
        await ensure_topics(self.settings)
        try:
            await self.producer.start()
        except KafkaError as exc:
            raise IngestError(
                f"cannot connect to Kafka at {self.settings.kafka_bootstrap}: {exc}"
            ) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.producer.stop()

    async def publish(self, trade: Any) -> None:
        """Queue one validated trade struct; `flush()` waits for the broker's acks."""
        key = f"{trade.exchange}:{trade.symbol}".encode()
        await self.producer.send(self.trades_topic, TRADE_CODEC.encode(trade), key=key)
        self.published += 1

    async def reject(self, source: str, raw: bytes, reason: str) -> None:
        """Send input that failed validation to the DLQ with the reason."""
        key, value = dead_letter_record(
            source_topic=source,
            key=None,
            value=raw,
            reason=reason,
            kind="schema",
            component=self.component,
        )
        await self.producer.send(self.dlq_topic, value, key=key)
        self.rejected += 1

    async def flush(self) -> None:
        """Wait until everything queued is acknowledged."""
        await self.producer.flush()
