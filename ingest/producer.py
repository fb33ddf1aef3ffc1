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

Trades are batched per `exchange:symbol` key: one record carries up to
`ingest_batch_trades` trades as a JSON array (the `trades` topic contract), sent when
full or `ingest_linger_ms` after its first trade. Per-record overhead in Kafka and in
the Faust processor is what limits throughput, not the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any

from aiokafka.errors import KafkaError

from ingest import metrics
from ingest.exceptions import IngestError
from schemas.codec import codec_for
from schemas.dead_letters import dead_letter_record
from schemas.events import Trade
from sigflow import tracing
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
        self._trades_topic = settings.topic("trades")
        self._batches: dict[bytes, _TradeBatch] = {}
        self._linger = settings.ingest_linger_ms / 1000
        self._batch_due = asyncio.Event()
        # One batch sender at a time: otherwise the linger task and a reader that filled
        # a batch can both wait inside aiokafka (metadata, buffer space) and wake up in
        # either order, putting a key's later batch before its earlier one.
        self._sending = asyncio.Lock()
        self._lingerer: asyncio.Task[None] | None = None

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
        self._lingerer = asyncio.create_task(self._send_lingering_batches())

    async def stop(self) -> None:
        """Deliver what is queued, then close; safe to call twice."""
        if self._started:
            self._started = False
            if self._lingerer is not None:
                self._lingerer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._lingerer
            try:
                await self._send_batches(list(self._batches))
            finally:
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

    async def send(
        self, topic: str, key: bytes, value: bytes, source: str, *, events: int = 1
    ) -> None:
        """Queue one record (same key → same partition → order kept); waits when full.

        With tracing on, each record gets a `publish` span whose context rides in its
        headers; `events` is how many events the record holds (a trades batch).
        """
        self._raise_failure()
        await self._slots.acquire()
        metrics.PRODUCER_PENDING.inc()
        try:
            with tracing.publish_span(
                topic, key, **{"messaging.batch.message_count": events, "sigflow.source": source}
            ) as headers:
                delivery = await self._producer.send(topic, value, key=key, headers=headers)
        except BaseException:
            self._release()
            raise
        delivery.add_done_callback(self._delivered)
        metrics.EVENTS_PUBLISHED.labels(source, topic).inc()

    async def send_trade(self, trade: Any, source: str) -> None:
        """Add a validated trade struct to its key's batch on `trades` (order kept)."""
        key = f"{trade.exchange}:{trade.symbol}".encode()
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = _TradeBatch(source, time.monotonic() + self._linger)
            self._batch_due.set()
        batch.trades.append(trade)
        if len(batch.trades) >= self.settings.ingest_batch_trades:
            await self._send_batches([key])

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
        """Send every open batch, wait until all is acknowledged (or raise why not)."""
        await self._send_batches(list(self._batches))
        await self._producer.flush()
        self._raise_failure()

    async def _send_batches(self, keys: list[bytes]) -> None:
        async with self._sending:
            for key in keys:
                batch = self._batches.pop(key, None)
                if batch is not None:
                    value = TRADE_CODEC.encode_batch(batch.trades)
                    await self.send(
                        self._trades_topic, key, value, batch.source, events=len(batch.trades)
                    )

    async def _send_lingering_batches(self) -> None:
        """Send each batch `ingest_linger_ms` after its first trade, however full."""
        while True:
            if not self._batches:
                self._batch_due.clear()
                await self._batch_due.wait()
            now = time.monotonic()
            due = [key for key, batch in self._batches.items() if batch.deadline <= now]
            try:
                await self._send_batches(due)
            except (IngestError, KafkaError) as exc:  # raised to the readers at their next send
                self._failure = self._failure or exc
            if self._batches:
                next_deadline = min(batch.deadline for batch in self._batches.values())
                await asyncio.sleep(max(0.0, next_deadline - time.monotonic()))

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


class _TradeBatch:
    """Trades of one key waiting to be sent as one record."""

    __slots__ = ("deadline", "source", "trades")

    def __init__(self, source: str, deadline: float) -> None:
        self.source = source
        self.deadline = deadline
        self.trades: list[Any] = []
