"""The Faust app: a thin shell that feeds micro-batches of trades to `CandleStream`
and publishes the candles, indicators, signals and dead letters it returns.

Guarantee: at-least-once delivery from Faust, made effectively-once for state by the
last-offset check in `CandleStream`, and for output by deterministic candles keyed on
(exchange, symbol, interval, open_time), which the ClickHouse sink deduplicates.
Faust's `exactly_once` mode was tried against Kafka 4.4 and never consumed its own
repartitioned records, so it is not used.
"""

from __future__ import annotations

import time
from typing import Any

import faust
from faust.auth import Credentials

from processors import metrics
from processors.candle_stream import CandleStream, RawRecord
from processors.signals import SignalEngine, load_rules
from sigflow.kafka_security import kafka_security_options
from sigflow.settings import Settings


def faust_broker_url(bootstrap: str) -> str:
    """Faust's broker URL list for a Kafka bootstrap string."""
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(","))


def faust_credentials(settings: Settings) -> Credentials | None:
    """The Kafka security options as Faust `broker_credentials` (Faust hands them on to
    the aiokafka clients it creates, so they match `kafka_security_options`)."""
    options = kafka_security_options(settings)
    protocol = options["security_protocol"]
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            mechanism=options["sasl_mechanism"],
            ssl_context=options.get("ssl_context"),  # None: SASL_PLAINTEXT
        )
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return None


def create_app(settings: Settings) -> faust.App:
    """The processor app with its topics, state table and candle agent."""
    app = faust.App(
        settings.processor_app_id,
        broker=faust_broker_url(settings.kafka_bootstrap),
        broker_credentials=faust_credentials(settings),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka_session_timeout_ms / 3000,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        key_serializer="raw",
        value_serializer="json",
        datadir=str(settings.data_dir / "processor"),
    )
    trades = app.topic(settings.topic("trades"), key_serializer="raw", value_serializer="raw")
    candles = app.topic(settings.topic("candles"), key_serializer="raw", value_serializer="raw")
    indicators = app.topic(
        settings.topic("indicators"), key_serializer="raw", value_serializer="raw"
    )
    signals = app.topic(settings.topic("signals"), key_serializer="raw", value_serializer="raw")
    dlq = app.topic(settings.topic("dlq"), key_serializer="raw", value_serializer="raw")
    # Keyed by the raw record key and placed by the producer's partitioner, so each key's
    # changelog lands in the same partition number as its trades (co-partitioned).
    state = app.Table(
        "candle-state",
        default=None,
        key_type=bytes,
        use_partitioner=True,
        partitions=settings.topic_partitions,
    )
    stream_logic = CandleStream(
        settings.candle_intervals,
        settings.allowed_lateness_ms,
        SignalEngine(load_rules(settings.signal_rules)),
    )

    @app.agent(trades)
    async def build_candles(stream: Any) -> None:
        async for events in stream.take_events(
            settings.processor_batch_size, within=settings.processor_batch_seconds
        ):
            started = time.perf_counter()
            records = [
                RawRecord(
                    topic=event.message.topic,
                    partition=event.message.partition,
                    offset=event.message.offset,
                    key=event.message.key,
                    value=event.message.value,
                )
                for event in events
            ]
            result = stream_logic.process(records, state.get)
            for key, value in result.candles:
                await candles.send(key=key, value=value)
            for key, value in result.indicators:
                await indicators.send(key=key, value=value)
            for key, value in result.signals:
                await signals.send(key=key, value=value)
            for key, value in result.dead_letters:
                await dlq.send(key=key, value=value)
            for key, new_state in result.states.items():
                state[key] = new_state
            # Make this batch's outputs and changelog durable before its offsets can be
            # acked: a rebalance that re-reads the changelog must never find it behind
            # the stream, or the trades in between would be lost.
            await app.producer.flush()
            metrics.TRADES_PROCESSED.inc(result.trades)
            metrics.REPLAYED_SKIPPED.inc(result.skipped)
            metrics.BATCH_SIZE.observe(len(records))
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            metrics.DEAD_LETTERS.labels("late").inc(result.late)
            metrics.DEAD_LETTERS.labels("schema").inc(len(result.dead_letters) - result.late)
            metrics.CANDLES_EMITTED.inc(len(result.candles))
            metrics.INDICATORS_EMITTED.inc(len(result.indicators))
            metrics.SIGNALS_EMITTED.inc(len(result.signals))

    return app
