"""Input offsets kept in state, and records Faust skipped read again from Kafka.

Faust's consumer does not deliver every record exactly in order around a rebalance or a
restart under load: records it fetched during table recovery are dropped and not always
read again, and its "gap" handling then acks the missing offsets as if they had been
read. A processor that trusted it folded records with holes in between, and the commit
moved past them. So each agent remembers, per input partition, the last offset it
folded in (a changelogged table, written with the rest of its state before the batch is
acked), and a batch that does not continue from there exactly is completed by reading
the missing range straight from Kafka. Offsets that really have no record (transaction
markers, compaction) come back empty, and the batch goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from processors import metrics
from processors.candle_stream import RawRecord
from processors.placement import partition_key
from sigflow.kafka import start_kafka_client
from sigflow.kafka_security import kafka_client_options
from sigflow.settings import Settings

log = logging.getLogger(__name__)


class InputPositions:
    """The last offset folded in per input partition, and the records to fold next."""

    def __init__(self, table: Mapping[bytes, int], settings: Settings) -> None:
        self.table = table  # the processor's changelogged Faust table (read here only)
        self.settings = settings
        self._reader: AIOKafkaConsumer | None = None
        self._reader_started = asyncio.Lock()  # agents share it: start it once

    def key(self, topic: str, partition: int) -> bytes:
        """The table key of `topic`'s `partition`, placed on that partition number."""
        return partition_key(topic, partition, self.settings.topic_partitions)

    async def next_records(self, records: list[RawRecord], stream: str) -> list[RawRecord]:
        """`records` (one batch, in offset order) without those folded in already, and with
        any record Faust skipped before or between them read from Kafka."""
        by_partition: dict[tuple[str, int], list[RawRecord]] = defaultdict(list)
        for record in records:
            by_partition[(record.topic, record.partition)].append(record)
        result: list[RawRecord] = []
        for (topic, partition), received in by_partition.items():
            last = self.table.get(self.key(topic, partition))
            if last is None:
                last = await self.start_offset(topic, partition) - 1
            fresh = [record for record in received if record.offset > last]
            delivered = len(fresh)
            if fresh and delivered < fresh[-1].offset - last:
                fresh = await self.read_range(topic, partition, last + 1, fresh[-1].offset + 1)
                skipped = len(fresh) - delivered
                if skipped:
                    metrics.REFETCHED_RECORDS.labels(stream).inc(skipped)
                    log.warning(
                        "read again records the consumer skipped",
                        extra={"topic": topic, "partition": partition, "records": skipped},
                    )
            result.extend(fresh)
        return result

    def positions_after(self, records: list[RawRecord]) -> dict[bytes, int]:
        """The table entries once `records` are folded in: the newest offset per input
        partition, for the caller to store with the batch's state (before the ack)."""
        return {self.key(record.topic, record.partition): record.offset for record in records}

    async def start_offset(self, topic: str, partition: int) -> int:
        """Where the processor starts on a partition it never folded in: its group's
        committed offset (say, reset to reprocess a time range), else the earliest."""
        tp = TopicPartition(topic, partition)
        reader = await self.reader()
        committed = await reader.committed(tp)  # read without joining the group
        if committed is not None:
            return int(committed)
        beginning: dict[TopicPartition, int] = await reader.beginning_offsets([tp])
        return beginning[tp]

    async def read_range(self, topic: str, partition: int, start: int, end: int) -> list[RawRecord]:
        """The records of `topic`'s `partition` with offsets in [start, end)."""
        tp = TopicPartition(topic, partition)
        reader = await self.reader()
        reader.assign([tp])
        reader.seek(tp, start)
        found: list[RawRecord] = []
        while await reader.position(tp) < end:
            batch = await reader.getmany(tp, timeout_ms=1000, max_records=end - start)
            found.extend(
                RawRecord(topic, partition, r.offset, r.key, r.value)
                for r in batch.get(tp, [])
                if start <= r.offset < end
            )
        return found

    async def reader(self) -> AIOKafkaConsumer:
        """The consumer that looks up offsets and reads skipped ranges: in the processor's
        group to read its commits, but never subscribed, so it never joins it or commits."""
        async with self._reader_started:
            if self._reader is None:
                reader = AIOKafkaConsumer(
                    **kafka_client_options(self.settings),
                    group_id=self.settings.processor_app_id,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                )
                await start_kafka_client(reader, self.settings)
                self._reader = reader
            return self._reader

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
