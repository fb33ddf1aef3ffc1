"""The latency floor: a bare aiokafka consume → produce relay of `trades` records.

No decoding, no state, no batching wait: each record fetched is handed to the producer
(linger 0, acks=all like sigflow) and its delivery is not awaited. What it adds over
Kafka itself is one fetch and one produce, which any processor pays too.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from bench.worker_process import write_state
from sigflow.kafka import create_producer
from sigflow.settings import Settings

RELAY_TOPIC = "relayed"  # under the run's topic prefix


async def relay(settings: Settings, state_file: Path) -> None:
    """Forward `trades` to `relayed` until SIGTERM; note when the first record came in."""
    consumer = AIOKafkaConsumer(
        settings.topic("trades"),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.processor_app_id,
        auto_offset_reset="earliest",
    )
    producer = create_producer(settings, linger_ms=0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await consumer.start()
    await producer.start()
    target = settings.topic(RELAY_TOPIC)
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100)
            if fetched and not state_file.exists():
                write_state(state_file, {"first_in": time.time()})
            for records in fetched.values():
                for record in records:
                    await producer.send(target, record.value, key=record.key)
    finally:
        await producer.stop()
        await consumer.stop()
