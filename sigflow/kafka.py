"""Kafka clients configured the sigflow way, and topic creation from the registry.

Connection and security options come from `sigflow.kafka_security.kafka_client_options`;
`start_kafka_client` starts any client within a time limit and turns a failure into a
one-line `KafkaConnectError` (unreachable, TLS refused, or login refused).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.topics import TOPICS
from sigflow.exceptions import KafkaConnectError, StackError
from sigflow.kafka_security import check_kafka_connection, kafka_client_options
from sigflow.settings import Settings

log = logging.getLogger(__name__)


def create_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A producer with explicit durability: acks=all, idempotent unless the broker can't."""
    options: dict[str, object] = {
        **kafka_client_options(settings),
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotent_producer,
        "linger_ms": 5,
        "compression_type": "lz4",
        "max_batch_size": 256 * 1024,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


KafkaClient: TypeAlias = AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient


async def start_kafka_client(
    client: KafkaClient, settings: Settings, timeout: float = 30.0
) -> None:
    """Start `client` within `timeout` seconds, or close it and raise a `KafkaConnectError`
    that says why (aiokafka itself only reports "Unable to bootstrap")."""
    try:
        await asyncio.wait_for(client.start(), timeout)
    except (KafkaError, OSError, TimeoutError) as exc:
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        await check_kafka_connection(settings, min(timeout, 10.0))  # raises the reason
        raise KafkaConnectError(
            f"cannot start a Kafka client for {settings.kafka_bootstrap}: "
            f"{exc or exc.__class__.__name__}"
        ) from exc


async def ensure_topics(
    settings: Settings, timeout: float = 30.0, extra: Sequence[NewTopic] = ()
) -> list[str]:
    """Create every registry topic (and `extra` ones) that does not exist yet; return the
    ones created."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await start_kafka_client(admin, settings, timeout)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(spec.name),
                num_partitions=spec.partitions or settings.topic_partitions,
                replication_factor=settings.topic_replication,
                topic_configs=spec.config(),
            )
            for spec in TOPICS.values()
            if settings.topic(spec.name) not in existing
        ] + [topic for topic in extra if topic.name not in existing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another role created them at the same moment
            except KafkaError as exc:
                raise StackError(f"creating topics failed: {exc}") from exc
        created = [topic.name for topic in wanted]
        if created:
            log.debug("created topics", extra={"topics": created})
        return created
    finally:
        await admin.close()


async def topic_partitions(settings: Settings, topics: list[str]) -> list[TopicPartition]:
    """Every partition of `topics`, from the broker's metadata."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await start_kafka_client(admin, settings)
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        for partition in sorted(topic["partitions"], key=lambda p: p["partition"])
    ]


async def consumer_lag(settings: Settings, group: str, topics: list[str]) -> int | None:
    """Records of `topics` that `group` has not committed yet; None before its first commit.

    Reads commits through a consumer of the group that never subscribes (so it does not
    join or disturb the group); the admin OffsetFetch is not served by every broker.
    """
    partitions = await topic_partitions(settings, topics)
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=group)
    await start_kafka_client(consumer, settings)
    try:
        ends = await consumer.end_offsets(partitions)
        committed = {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()
    if all(offset is None for offset in committed.values()):
        return None
    # Clamped per partition: Tansu reports the end of a multi-record batch short.
    return sum(max(0, ends[tp] - (committed[tp] or 0)) for tp in partitions)
