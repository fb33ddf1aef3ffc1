"""The processor's Kafka clients where Faust on aiokafka lost records or stalled:
partitions never committed are read again after a seek, and an agent that raises
stops the worker; and its outputs, written as whole record batches."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processors import faust_transport
from processors.app import create_app, ensure_processor_topics, send_in_batches
from processors.faust_transport import seek_to_committed_or_earliest
from sigflow.kafka import ensure_topics
from sigflow.settings import Settings, settings_env
from tests.integration.raw_records import send_raw

pytestmark = pytest.mark.integration


async def read_offsets(consumer: AIOKafkaConsumer, count: int) -> list[int]:
    offsets: list[int] = []
    async with asyncio.timeout(30):
        while len(offsets) < count:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                offsets.extend(record.offset for record in records)
    return offsets


async def test_a_partition_never_committed_is_read_from_the_start_again_after_a_seek(
    pipeline_settings: Settings,
) -> None:
    # Faust drops what it fetched during a rebalance or recovery and seeks back to the
    # committed offsets; a partition without a commit must go back to its start.
    settings = pipeline_settings
    topic = settings.topic("trades")
    await send_raw(settings, topic, [str(n).encode() for n in range(5)], partition=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.processor_app_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.subscribe([topic])
        assert await read_offsets(consumer, 5) == [0, 1, 2, 3, 4]
        committed = await seek_to_committed_or_earliest(consumer)
        assert committed[TopicPartition(topic, 0)] is None
        assert await read_offsets(consumer, 5) == [0, 1, 2, 3, 4]
    finally:
        await consumer.stop()


async def test_outputs_larger_than_a_record_batch_arrive_whole_and_in_order(
    pipeline_settings: Settings,
) -> None:
    settings = pipeline_settings
    await ensure_topics(settings)
    topic, partition = settings.topic("candles"), settings.topic_partitions - 1
    records = [(b"k%d" % n, b"v%d" % n * 100, [("n", b"%d" % n)]) for n in range(50)]
    # ~300-byte records against a 1 kB batch: the run spans a dozen batches.
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", max_batch_size=1024
    )
    await producer.start()
    try:
        deliveries = await send_in_batches(producer, topic, partition, records)
        await producer.flush()
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    assert len(deliveries) > 5
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, partition)])
        await consumer.seek_to_beginning()
        got = []
        async with asyncio.timeout(30):
            while len(got) < len(records):
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend((r.key, r.value, list(r.headers)) for r in batch)
    finally:
        await consumer.stop()
    assert got == records


async def test_the_table_changelogs_exist_with_the_input_partitions_before_the_worker_starts(
    pipeline_settings: Settings,
) -> None:
    settings = pipeline_settings.model_copy(update={"topic_partitions": 4})
    app = create_app(settings)
    await ensure_processor_topics(settings, app)
    changelogs = [table.changelog_topic.get_topic_name() for table in app.tables.values()]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(changelogs)
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in changelogs]
        )
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys(changelogs, 4)
    policies = [
        value
        for response in configs
        for *_, entries in (resource[:5] for resource in response.resources)
        for name, value, *_ in entries
        if name == "cleanup.policy"
    ]
    assert policies == ["compact"] * len(changelogs)


async def test_the_processor_app_runs_on_sigflows_transport(pipeline_settings: Settings) -> None:
    app = create_app(pipeline_settings)
    assert isinstance(app.transport, faust_transport.Transport)
    assert isinstance(app.consumer, faust_transport.Consumer)
    # Faust's own 1.5 s fetch wait stalled a worker catching up on a backlog.
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == faust_transport.FETCH_MAX_WAIT_MS
    finally:
        await consumer.stop()
    assert app.producer.max_batch_size == pipeline_settings.processor_record_batch_bytes


async def test_an_agent_that_raises_stops_the_worker_with_exit_1_and_commits_nothing(
    pipeline_settings: Settings,
) -> None:
    settings = pipeline_settings
    topic = settings.topic("trades")
    await send_raw(settings, topic, [b"[]"], key=b"coinbase:BTC-USD")
    worker = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.integration.crashing_worker"],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = worker.stdout + worker.stderr
    assert worker.returncode == 1, output[-4000:]
    assert "a bug met 1 records" in output
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.processor_app_id
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        assert [await consumer.committed(tp) for tp in partitions] == [None] * len(partitions)
    finally:
        await consumer.stop()
