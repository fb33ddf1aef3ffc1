"""The one Kafka producer of an ingest process, shared by every source in it.

Readers (exchange feeds, the chain follower, file replay) call `send()`; it returns as
soon as the record is queued, but never lets more than `ingest_max_pending` records wait
for the broker's acknowledgement: past that bound `send()` waits, so a slow or absent
broker slows the readers down instead of growing memory (back-pressure).

During a broker outage aiokafka keeps retrying each batch, in order and idempotently,
for up to `kafka_delivery_timeout_ms`; the readers wait meanwhile and resume when the
broker is back. A delivery that still fails after that bound is not dropped silently:
the next `send()` or `flush()` raises `DeliveryError`, the process exits non-zero, and
each source resumes from its own checkpoint (exchange gaps are backfilled over REST,
the chain follower restarts at its last published block).
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from aiokafka.errors import KafkaError

from ingest import metrics
from ingest.exceptions import IngestError
from schemas.codec import codec_for
from schemas.dead_letters import dead_letter_record
from schemas.events import Trade
from sigflow.kafka import create_producer, ensure_topics
from sigflow.settings import Settings

log = logging.getLogger(__name__)
TRADE_CODEC = codec_for(Trade)


class DeliveryError(IngestError):
    """Kafka did not acknowledge a record within the delivery timeout."""


class EventProducer:
    """Keyed, idempotent (acks=all), compressed sends with a bounded in-flight buffer."""

    def __init__(self, settings: Settings, component: str) -> None:
        self.settings = settings
        self.component = component
        self.dlq_topic = settings.topic("dlq")
        self._producer = create_producer(
            settings, request_timeout_ms=settings.kafka_delivery_timeout_ms
        )
        self._slots = asyncio.Semaphore(settings.ingest_max_pending)
        self._failure: BaseException | None = None
        self._started = False

    async def start(self) -> None:
        """Create missing topics and connect; a broker that cannot be reached is an error."""
        await ensure_topics(self.settings)
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise IngestError(
                f"cannot connect to Kafka at {self.settings.kafka_bootstrap}: {exc}"
            ) from exc
        self._started = True

    async def stop(self) -> None:
        """Deliver what is queued, then close; safe to call twice."""
        if self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def send(self, topic: str, key: bytes, value: bytes, source: str) -> None:
        """Queue one record (same key → same partition → order kept); waits when full."""
        self._raise_failure()
        await self._slots.acquire()
        metrics.PRODUCER_PENDING.inc()
        try:
            delivery = await self._producer.send(topic, value, key=key)
        except BaseException:
            self._release()
            raise
        delivery.add_done_callback(self._delivered)
        metrics.EVENTS_PUBLISHED.labels(source, topic).inc()

    async def send_trade(self, trade: Trade, source: str) -> None:
        """Publish a validated trade struct to `trades`, keyed `exchange:symbol`."""
        key = f"{trade.exchange}:{trade.symbol}".encode()
        await self.send(self.settings.topic("trades"), key, TRADE_CODEC.encode(trade), source)

    async def reject(self, source: str, raw: bytes, reason: str, kind: str = "schema") -> None:
        """Send input that failed validation to the DLQ with its source and the reason."""
        key, value = dead_letter_record(
            source_topic=source,
            key=None,
            value=raw,
            reason=reason,
            kind=kind,
            component=self.component,
        )
        metrics.DEAD_LETTERS.labels(source, kind).inc()
        await self.send(self.dlq_topic, key, value, source)

    async def flush(self) -> None:
        """Wait until everything queued is acknowledged (or raise why it was not)."""
        await self._producer.flush()
        self._raise_failure()

    def _release(self) -> None:
        metrics.PRODUCER_PENDING.dec()
        self._slots.release()

    def _delivered(self, delivery: asyncio.Future[object]) -> None:
        self._release()
        if delivery.cancelled():
            return
        if (error := delivery.exception()) is not None and self._failure is None:
            self._failure = error
            log.error("kafka delivery failed", extra={"error": str(error)})

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise DeliveryError(
                f"Kafka at {self.settings.kafka_bootstrap} did not acknowledge a record "
                f"within {self.settings.kafka_delivery_timeout_ms} ms: {self._failure}"
            ) from self._failure
