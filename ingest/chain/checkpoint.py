"""Where the chain feed resumes: the output topics themselves are the checkpoint.

What was published is exactly what is recorded, so there is no local file that could
disagree with Kafka after a crash. On start the feed reads back this chain id's newest
records: the tail of `onchain.blocks` until it covers the reorg window, then
`onchain.transfers` from a little before the oldest of those block records (by Kafka
timestamp). `BlockFollower.resume` turns them into the state it had when it stopped.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from ingest.chain.follower import BLOCK_CODEC, TRANSFER_CODEC
from schemas.exceptions import SchemaError
from sigflow.kafka_security import kafka_client_options
from sigflow.settings import Settings

log = logging.getLogger(__name__)

CHUNK_RECORDS = 2_000
# Transfers of a block are published just before its block record, by the same clock.
TIMESTAMP_SLACK_MS = 60_000
READ_TIMEOUT_SECONDS = 60.0


def chain_key(chain_id: int) -> bytes:
    """The Kafka key of every record of one chain (one partition: per-chain order)."""
    return str(chain_id).encode()


@dataclass(frozen=True)
class Published:
    """This chain's recent records, in topic order."""

    blocks: list[Any]
    transfers: list[Any]


async def topic_partitions(settings: Settings, topic: str) -> list[int]:
    """Partition ids of `topic` as the brokers report them (a topic created a moment ago
    may take a few metadata rounds to appear)."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            while True:
                [described] = await admin.describe_topics([topic])
                partitions = sorted(p["partition"] for p in described["partitions"])
                if partitions and not described.get("error_code"):
                    return partitions
                await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _partition(settings: Settings, topic: str, key: bytes) -> TopicPartition:
    """The partition the producer's default partitioner puts `key` in."""
    partitions = await topic_partitions(settings, topic)
    return TopicPartition(topic, DefaultPartitioner()(key, partitions, partitions))


async def _read(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int
) -> list[ConsumerRecord[bytes, bytes]]:
    consumer.seek(tp, start)
    records: list[ConsumerRecord[bytes, bytes]] = []
    async with asyncio.timeout(READ_TIMEOUT_SECONDS):
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            records += [r for r in batch.get(tp, []) if r.offset < end]
    return records


def _decode(records: list[ConsumerRecord[bytes, bytes]], key: bytes, codec: Any) -> list[Any]:
    events = []
    for record in records:
        if record.key != key:
            continue
        try:
            events.append(codec.decode(record.value))
        except SchemaError as exc:  # not ours to judge here; the sink dead-letters it
            log.warning(
                "unreadable record in checkpoint",
                extra={"offset": record.offset, "error": exc.reason},
            )
    return events


async def read_published(settings: Settings, chain_id: int, window: int) -> Published:
    """The newest records of `chain_id`: at least `window` block numbers, if there are."""
    key = chain_key(chain_id)
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        blocks_tp = await _partition(settings, settings.topic("onchain.blocks"), key)
        transfers_tp = await _partition(settings, settings.topic("onchain.transfers"), key)
        consumer.assign([blocks_tp, transfers_tp])
        beginning = (await consumer.beginning_offsets([blocks_tp]))[blocks_tp]
        end = (await consumer.end_offsets([blocks_tp]))[blocks_tp]
        block_records: list[ConsumerRecord[bytes, bytes]] = []
        numbers: set[int] = set()
        stop = end
        while stop > beginning and len(numbers) < window:
            start = max(beginning, stop - CHUNK_RECORDS)
            chunk = await _read(consumer, blocks_tp, start, stop)
            block_records = chunk + block_records
            numbers.update(e.number for e in _decode(chunk, key, BLOCK_CODEC))
            stop = start
        ours = [r for r in block_records if r.key == key]
        transfers_end = (await consumer.end_offsets([transfers_tp]))[transfers_tp]
        if ours:
            since = min(r.timestamp for r in ours) - TIMESTAMP_SLACK_MS
            found = await consumer.offsets_for_times({transfers_tp: max(0, since)})
            position = found[transfers_tp]
            transfers_start = position.offset if position is not None else transfers_end
        else:  # nothing recorded yet, or only the transfers of an interrupted first step
            transfers_start = (await consumer.beginning_offsets([transfers_tp]))[transfers_tp]
        transfer_records = await _read(consumer, transfers_tp, transfers_start, transfers_end)
    finally:
        await consumer.stop()
    return Published(
        blocks=_decode(ours, key, BLOCK_CODEC),
        transfers=_decode(transfer_records, key, TRANSFER_CODEC),
    )
