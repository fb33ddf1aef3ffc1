"""The e2e baseline's loader: candles from Kafka into ClickHouse as a hand-written script
would load them.

    python -m bench.naive_loader        (settings from SIGFLOW_*)

An aiokafka consumer in the sink's group with auto-commit; every `getmany` becomes one
row-oriented clickhouse-connect insert of its candles (`json.loads` per record), with no
dead letters, no deduplication token and no metrics. It loads only `candles`, where
sigflow's sink loads every output table: it does less work, never more.
"""

from __future__ import annotations

import asyncio
import json
import signal

from aiokafka import AIOKafkaConsumer

from schemas.events import Candle
from sigflow.settings import Settings
from sinks.warehouse import connect

COLUMNS = list(Candle.model_fields)


async def load_candles(settings: Settings) -> None:
    """Insert every fetch of the `candles` topic until SIGTERM/SIGINT."""
    consumer = AIOKafkaConsumer(
        settings.topic("candles"),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.sink_group_id,
        auto_offset_reset="earliest",
    )
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await consumer.start()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100)
            rows = [
                [candle[column] for column in COLUMNS]
                for records in fetched.values()
                for record in records
                for candle in (json.loads(record.value or b"{}"),)
            ]
            if rows:
                await client.insert("candles", rows, column_names=COLUMNS)
    finally:
        await consumer.stop()
        await client.close()


if __name__ == "__main__":
    asyncio.run(load_candles(Settings()))
