"""The sink role: consume output topics, flush batches to ClickHouse, then commit.

Offsets are committed only after the insert they cover succeeded. A failed flush seeks
the partitions back to the first unflushed offset and backs off with jitter, so the
warehouse being down pauses consumption (memory stays bounded by one batch) and
nothing is lost; the re-read batch carries the same dedup token and natural keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from schemas.dead_letters import reject_element, reject_record
from schemas.exceptions import SchemaError
from sigflow import tracing
from sigflow.kafka import create_producer, start_kafka_client
from sigflow.kafka_security import kafka_client_options
from sigflow.settings import Settings
from sinks import metrics
from sinks.clickhouse import ROUTES, ClickHouseSink, TableRoute
from sinks.exceptions import SinkError
from sinks.warehouse import connect, database_name

log = logging.getLogger(__name__)

BACKOFF_START_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0


class _FlushOnRevoke(ConsumerRebalanceListener):
    """Flush and commit what belongs to partitions this worker is about to lose."""

    def __init__(self, runner: SinkRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in revoked}
        try:
            await self.runner.flush_and_commit(keys)
        except SinkError as exc:
            # The next owner re-reads from the last commit; dedup keeps it exact.
            log.warning("flush on revoke failed", extra={"error": str(exc)})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


class SinkRunner:
    """Owns the consumer, the ClickHouse sink and the DLQ producer of the sink role."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.routes: dict[str, TableRoute] = {settings.topic(r.topic): r for r in ROUTES}
        self.consumer = AIOKafkaConsumer(
            **kafka_client_options(settings),
            group_id=settings.sink_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_session_timeout_ms // 3,
            max_poll_interval_ms=10 * 60 * 1000,
        )
        self.producer = create_producer(settings)
        self.sink: ClickHouseSink | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Consume until `stop()`; flush and commit what is buffered before returning."""
        client = await connect(self.settings)
        self.sink = ClickHouseSink(
            client,
            database_name(self.settings),
            self.routes,
            max_rows=self.settings.sink_batch_rows,
            max_age_seconds=self.settings.sink_flush_seconds,
        )
        backoff = BACKOFF_START_SECONDS
        try:  # a client that fails to start leaves nothing open behind it
            await start_kafka_client(self.producer, self.settings)
            await start_kafka_client(self.consumer, self.settings)
            self.consumer.subscribe(list(self.routes), listener=_FlushOnRevoke(self))
            while not self._stopping.is_set():
                if self.sink.due():
                    try:
                        await self.flush_and_commit()
                        backoff = BACKOFF_START_SECONDS
                    except SinkError as exc:
                        metrics.FLUSH_FAILURES.inc()
                        delay = random.uniform(backoff / 2, backoff)
                        log.warning(
                            "flush failed, re-reading after back-off",
                            extra={"error": str(exc), "delay_seconds": round(delay, 2)},
                        )
                        backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
                        await self._sleep(delay)
                        continue
                wait_ms = int(max(0.0, min(self.sink.seconds_until_due(), 0.5)) * 1000)
                batches = await self.consumer.getmany(
                    timeout_ms=wait_ms, max_records=self.settings.sink_batch_rows
                )
                for records in batches.values():
                    await self._buffer(records)
            await self.flush_and_commit()
        finally:
            await self.consumer.stop()
            await self.producer.stop()
            await client.close()

    async def flush_and_commit(self, partitions: set[tuple[str, int]] | None = None) -> None:
        """Flush buffered batches; commit their offsets only if every write succeeded."""
        assert self.sink is not None
        rewind = self.sink.first_offsets()
        try:
            commits = await self.sink.flush(partitions)
        except SinkError:
            for (topic, partition), offset in rewind.items():
                if partitions is None or (topic, partition) in partitions:
                    self.consumer.seek(TopicPartition(topic, partition), offset)
            raise
        if commits:
            await self.consumer.commit(
                {TopicPartition(t, p): offset for (t, p), offset in commits.items()}
            )

    def stop(self) -> None:
        """Ask `run()` to finish its batch, commit and return."""
        self._stopping.set()

    async def _buffer(self, records: list[ConsumerRecord]) -> None:
        """Decode one partition's records; rejects go to the DLQ, the rest to the sink."""
        assert self.sink is not None
        first = records[0]
        route = self.routes[first.topic]
        rows: list[Any] = []
        for record in records:
            try:
                if route.batched:
                    events, rejected = route.codec.decode_batch(record.value)
                    rows.extend(events)
                    for element in rejected:
                        await self._dead_letter(reject_element(record, element, "schema", "sink"))
                else:
                    rows.append(route.codec.decode(record.value))
            except SchemaError as exc:
                log.warning(
                    "record rejected to the dlq",
                    extra={
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "key": record.key,
                        "reason": exc.reason,
                    },
                )
                await self._dead_letter(reject_record(record, exc.reason, "schema", "sink"))
        links = tracing.links(r.headers for r in records) if tracing.enabled() else ()
        self.sink.add(first.topic, first.partition, first.offset, records[-1].offset, rows, links)

    async def _dead_letter(self, record: tuple[bytes, bytes]) -> None:
        metrics.DEAD_LETTERS.inc()
        key, value = record
        await self.producer.send_and_wait(self.settings.topic("dlq"), value, key=key)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
