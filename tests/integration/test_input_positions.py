"""A batch the consumer delivered with holes is completed from Kafka, in offset order,
and what was folded in already is dropped."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from processors import metrics
from processors.candle_stream import RawRecord
from processors.input_positions import InputPositions
from sigflow.settings import Settings
from tests.integration.raw_records import send_raw

pytestmark = pytest.mark.integration

COUNT = 10


async def published(settings: Settings) -> list[RawRecord]:
    """COUNT records on partition 0 of `trades`, as the consumer would deliver them."""
    topic = settings.topic("trades")
    await send_raw(settings, topic, [f"v{n}".encode() for n in range(COUNT)], b"k", 0)
    return [RawRecord(topic, 0, n, b"k", f"v{n}".encode()) for n in range(COUNT)]


def refetched(stream: str) -> float:
    return metrics.REFETCHED_RECORDS.labels(stream)._value.get()


async def test_records_skipped_before_and_between_are_read_again_in_order(
    pipeline_settings: Settings,
) -> None:
    records = await published(pipeline_settings)
    positions = InputPositions({}, pipeline_settings)
    before = refetched("holes")
    delivered = [records[n] for n in (2, 3, 7, 8)]  # 0, 1 and 4..6 never arrived
    try:
        assert await positions.next_records(delivered, "holes") == records[:9]
    finally:
        await positions.close()
    assert refetched("holes") - before == 5


async def test_a_batch_drops_what_was_folded_in_and_continues_from_the_position(
    pipeline_settings: Settings,
) -> None:
    records = await published(pipeline_settings)
    table: dict[bytes, int] = {}
    positions = InputPositions(table, pipeline_settings)
    table.update(positions.positions_after(records[:4]))  # folded in up to offset 3
    try:
        batch = [records[n] for n in (2, 3, 6, 9)]
        assert await positions.next_records(batch, "s") == records[4:]
        table.update(positions.positions_after(records[4:]))
        assert await positions.next_records(records[5:], "s") == []
    finally:
        await positions.close()


async def test_a_partition_never_folded_in_starts_at_the_groups_committed_offset(
    pipeline_settings: Settings,
) -> None:
    settings = pipeline_settings
    records = await published(settings)
    group = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.processor_app_id,
        enable_auto_commit=False,
    )
    await group.start()
    tp = TopicPartition(settings.topic("trades"), 0)
    try:  # as `kafka-consumer-groups --reset-offsets` leaves it, to reprocess from 6
        group.assign([tp])
        await group.commit({tp: 6})
    finally:
        await group.stop()
    positions = InputPositions({}, settings)
    try:
        assert await positions.next_records(records[7:], "s") == records[6:]
    finally:
        await positions.close()
