"""The baseline of the Kafka benchmarks: candles as a straightforward Faust user writes them.

One trade JSON object per record, and per event: `json.loads`, pydantic
`Trade.model_validate`, a dict OHLCV update of (key, minute) (`NaiveCandleAgent`, the
same per-event logic as `sigflow bench processors`), and one awaited `topic.send()` per
closed candle. Its state is a plain dict (no changelog), and it computes no indicators or
signals: it does less work than sigflow's processor, never more. The Faust settings that
matter for speed (acks, offsets, serializers) are those of `processors.app.create_app`.
"""

from __future__ import annotations

from typing import Any

import faust

from bench.processors import INTERVALS, NaiveCandleAgent
from processors.app import faust_broker_url
from processors.candle_stream import RawRecord
from sigflow.settings import Settings


def create_naive_app(settings: Settings) -> faust.App:
    """A Faust app whose one agent builds 1m candles event by event."""
    app = faust.App(
        settings.processor_app_id,
        broker=faust_broker_url(settings.kafka_bootstrap),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(settings.data_dir / "processor"),
    )
    trades = app.topic(settings.topic("trades"), key_serializer="raw", value_serializer="raw")
    candles = app.topic(settings.topic("candles"), key_serializer="raw", value_serializer="raw")
    builder = NaiveCandleAgent(INTERVALS, settings.allowed_lateness_ms)

    @app.agent(trades)
    async def naive_candles(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            record = RawRecord(
                message.topic, message.partition, message.offset, message.key, message.value
            )
            closed: list[tuple[bytes, bytes]] = []
            builder.on_record(record, closed)
            for key, value in closed:
                await candles.send(key=key, value=value)

    return app
