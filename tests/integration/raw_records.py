"""Raw records put on a topic with a bare aiokafka producer (no sigflow encoding)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from sigflow.kafka import ensure_topics
from sigflow.settings import Settings


async def send_raw(
    settings: Settings,
    topic: str,
    values: list[bytes],
    key: bytes | None = None,
    partition: int | None = None,
) -> None:
    """Create the registry topics, then send `values` in order, each acknowledged."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()
