"""The Faust app: thin shells that feed micro-batches to the pure stream logic and
publish what it returns.

Three agents, each `take_events` micro-batches with state in a changelogged table:

- trades -> `CandleStream`: candles, indicators, signals, price-jump / volume-spike /
  stale-feed anomalies, and every closed candle again keyed by symbol on an internal
  topic (`<app id>-candles-by-symbol`);
- candles by symbol -> `CrossStream`: cross-exchange spreads (as `indicators` records)
  and divergence anomalies;
- signals + anomalies -> `AlertStream`: alerts keyed by rule id;
- on-chain (see `onchain_stream.py`): candles -> `PriceFeed` -> closes broadcast to every
  partition of `<app id>-asset-prices`; onchain.blocks + onchain.transfers + those
  prices -> `OnchainStream`: gas-spike, reorg and whale-transfer anomalies.

Guarantee: at-least-once delivery from Faust, made effectively-once for state by the
last-offset check each stream keeps per key, and for output by deterministic records
(natural keys, deterministic anomaly and alert ids), which the ClickHouse sink and
webhook receivers deduplicate. Each batch's outputs and changelog are flushed before
its offsets can be acked. Faust's `exactly_once` mode was tried against Kafka 4.4 and
never consumed its own repartitioned records, so it is not used.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import faust
from aiokafka.admin import NewTopic
from faust.auth import Credentials

from processors import metrics
from processors.alert_stream import AlertStream
from processors.alerts import AlertEngine, load_alert_rules
from processors.anomalies.rules import AnomalyRules, load_anomaly_rules
from processors.candle_stream import CandleStream, RawRecord
from processors.cross_stream import CrossStream
from processors.exceptions import TokenPricesError
from processors.onchain_stream import OnchainStream, PriceFeed, Source
from processors.pricing import load_token_prices
from processors.signals import SignalEngine, load_rules
from schemas.topics import DAY_MS
from sigflow import tracing
from sigflow.kafka import ensure_topics
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


def by_symbol_topic(settings: Settings) -> str:
    """The internal topic of closed candles keyed by symbol (one per app id, like Faust's
    own repartition topics)."""
    return f"{settings.processor_app_id}-candles-by-symbol"


def prices_topic(settings: Settings) -> str:
    """The internal topic of asset prices broadcast to every partition (on-chain join)."""
    return f"{settings.processor_app_id}-asset-prices"


def internal_topics(settings: Settings) -> list[NewTopic]:
    """Internal topics that must exist with `topic_partitions` partitions before the worker
    starts: the broker would auto-create them with one partition on first use, the asset
    prices must be co-partitioned with the on-chain topics, and candles by symbol spread
    the cross-exchange work over the partitions."""
    return [
        NewTopic(
            name=name,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication,
            topic_configs={"retention.ms": str(7 * DAY_MS), "cleanup.policy": "delete"},
        )
        for name in (prices_topic(settings), by_symbol_topic(settings))
    ]


async def ensure_processor_topics(settings: Settings) -> None:
    """Create the registry topics and the processor's internal topics (before its worker
    starts: its agents send to partitions that must already exist)."""
    await ensure_topics(settings, extra=internal_topics(settings))


def raw_records(events: Iterable[Any]) -> list[RawRecord]:
    """The consumed records of a micro-batch: each record once, in offset order.

    After a rebalance Faust seeks back to the committed offset, and a micro-batch can
    then hold records it had buffered before the seek followed by the same records again.
    Folding them as read would count a trade twice or out of order; the per-key offset
    guards assume each partition's records arrive once and ascending.
    """
    unique: dict[tuple[str, int, int], RawRecord] = {}
    for event in events:
        message = event.message
        unique.setdefault(
            (message.topic, message.partition, message.offset),
            RawRecord(
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value,
            ),
        )
    return [unique[place] for place in sorted(unique)]


async def micro_batches(batches: AsyncIterator[list[Any]], stream: str) -> AsyncIterator[list[Any]]:
    """The micro-batches of `take_events`, each acked only once the agent is done with it,
    and handled inside its `process <stream>` span when tracing is on.

    `take_events` acks a batch in a `finally` around its `yield`, so an agent cancelled
    mid-batch (as Faust's stop on SIGTERM does) would have the whole batch acked and
    committed although its state and outputs were never written, and a restart would
    skip those records. Holding one more reference on each message until the agent asks
    for the next batch keeps an unfinished batch uncommitted: it is read again.
    """
    async for events in batches:
        messages = [event.message for event in events]
        for message in messages:
            message.incref()
        consumed = [(m.key, m.headers) for m in messages] if tracing.enabled() else ()
        with tracing.BatchTrace(f"process {stream}", consumed):
            yield events
        for message in messages:  # reached only when the agent asks for the next batch
            message.decref()


def create_app(settings: Settings) -> faust.App:
    """The processor app with its topics, state tables and agents."""
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

    def raw_topic(*names: str, **options: Any) -> Any:
        return app.topic(*names, key_serializer="raw", value_serializer="raw", **options)

    trades = raw_topic(settings.topic("trades"))
    candles = raw_topic(settings.topic("candles"))
    indicators = raw_topic(settings.topic("indicators"))
    signals = raw_topic(settings.topic("signals"))
    anomalies = raw_topic(settings.topic("anomalies"))
    alerts = raw_topic(settings.topic("alerts"))
    dlq = raw_topic(settings.topic("dlq"))
    by_symbol = raw_topic(
        by_symbol_topic(settings),
        partitions=settings.topic_partitions,
        internal=True,
        retention=7 * 24 * 3600.0,
    )
    alert_sources = raw_topic(settings.topic("signals"), settings.topic("anomalies"))

    # Keyed by the raw record key and placed by the producer's partitioner, so each key's
    # changelog lands in the same partition number as its input records (co-partitioned).
    def state_table(name: str) -> Any:
        return app.Table(
            name,
            default=None,
            key_type=bytes,
            use_partitioner=True,
            partitions=settings.topic_partitions,
        )

    candle_state = state_table("candle-state")
    cross_state = state_table("cross-state")
    alert_state = state_table("alert-state")
    anomaly_rules = load_anomaly_rules(settings.anomaly_rules)
    candle_logic = CandleStream(
        settings.candle_intervals,
        settings.allowed_lateness_ms,
        SignalEngine(load_rules(settings.signal_rules)),
        anomaly_rules,
        partitions=settings.topic_partitions,
    )
    cross_logic = CrossStream(anomaly_rules.divergence)
    alert_logic = AlertStream(
        AlertEngine(load_alert_rules(settings.alert_rules)),
        {settings.topic("signals"): "signal", settings.topic("anomalies"): "anomaly"},
    )

    async def publish(topic: Any, records: list[tuple[bytes, bytes]]) -> None:
        for key, value in records:
            await topic.send(key=key, value=value, headers=tracing.output_headers(key))

    known_changelogs: set[str] = set()

    async def changelog_known(table: Any) -> None:
        """Wait once per table until the producer knows its changelog's partitions: a
        table write places the record by key at once, and right after start-up, before
        that metadata arrived, it raised and crashed the agent (which Faust does not
        restart)."""
        topic = table.changelog_topic.get_topic_name()
        if topic not in known_changelogs:
            producer: Any = app.producer  # Faust's aiokafka driver, around AIOKafkaProducer
            await producer._ensure_producer().partitions_for(topic)
            known_changelogs.add(topic)

    async def finish_batch(
        stream: str, events: list[Any], table: Any, states: dict[bytes, Any]
    ) -> None:
        """Store new state, then make the batch's outputs and changelog durable before its
        offsets can be acked: a rebalance that re-reads the changelog must never find it
        behind the stream, or the input in between would be lost."""
        await changelog_known(table)
        for key, new_state in states.items():
            table[key] = new_state
        await app.producer.flush()
        metrics.EVENTS_PROCESSED.labels(stream).inc(len(events))
        metrics.TABLE_KEYS.labels(table.name).set(len(table))
        newest: dict[Any, int] = {}
        for event in events:
            newest[event.message.tp] = event.message.offset
        for tp, offset in newest.items():
            highwater = app.consumer.highwater(tp)
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, highwater - offset - 1)
                )

    @app.agent(trades)
    async def build_candles(stream: Any) -> None:
        async for events in micro_batches(
            stream.take_events(
                settings.processor_batch_size, within=settings.processor_batch_seconds
            ),
            "trades",
        ):
            started = time.perf_counter()
            records = raw_records(events)
            result = candle_logic.process(records, candle_state.get)
            await publish(candles, result.candles)
            await publish(indicators, result.indicators)
            await publish(signals, result.signals)
            await publish(anomalies, result.anomalies)
            await publish(by_symbol, result.by_symbol)
            await publish(dlq, result.dead_letters)
            await finish_batch("trades", events, candle_state, result.states)
            metrics.TRADES_PROCESSED.inc(result.trades)
            metrics.REPLAYED_SKIPPED.inc(result.skipped)
            metrics.BATCH_SIZE.observe(len(records))
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            metrics.DEAD_LETTERS.labels("late").inc(result.late)
            metrics.DEAD_LETTERS.labels("schema").inc(len(result.dead_letters) - result.late)
            metrics.CANDLES_EMITTED.inc(len(result.candles))
            metrics.INDICATORS_EMITTED.inc(len(result.indicators))
            metrics.SIGNALS_EMITTED.inc(len(result.signals))
            for kind, found in result.anomaly_kinds.items():
                metrics.ANOMALIES_EMITTED.labels(kind).inc(found)
            for lateness in result.lateness_ms:
                metrics.TRADE_LATENESS.observe(lateness / 1000)

    @app.agent(by_symbol)
    async def compare_exchanges(stream: Any) -> None:
        async for events in micro_batches(
            stream.take_events(
                settings.processor_batch_size, within=settings.processor_batch_seconds
            ),
            "cross",
        ):
            result = cross_logic.process(raw_records(events), cross_state.get)
            await publish(indicators, result.indicators)
            await publish(anomalies, result.anomalies)
            await publish(dlq, result.dead_letters)
            await finish_batch("cross", events, cross_state, result.states)
            metrics.REPLAYED_SKIPPED.inc(result.skipped)
            metrics.INDICATORS_EMITTED.inc(len(result.indicators))
            metrics.CROSS_LATE_CANDLES.inc(result.late)
            metrics.DEAD_LETTERS.labels("schema").inc(len(result.dead_letters))
            for kind, found in result.anomaly_kinds.items():
                metrics.ANOMALIES_EMITTED.labels(kind).inc(found)

    @app.agent(alert_sources)
    async def raise_alerts(stream: Any) -> None:
        async for events in micro_batches(
            stream.take_events(
                settings.processor_batch_size, within=settings.processor_batch_seconds
            ),
            "alerts",
        ):
            result = alert_logic.process(raw_records(events), alert_state.get)
            await publish(alerts, result.alerts)
            await publish(dlq, result.dead_letters)
            await finish_batch("alerts", events, alert_state, result.states)
            metrics.REPLAYED_SKIPPED.inc(result.skipped)
            metrics.DEAD_LETTERS.labels("schema").inc(len(result.dead_letters))
            for rule, fired in result.fired.items():
                metrics.ALERTS_EMITTED.labels(rule).inc(fired)
            for rule, suppressed in result.suppressed.items():
                metrics.ALERTS_SUPPRESSED.labels(rule).inc(suppressed)

    add_onchain_agents(app, settings, anomaly_rules, raw_topic, publish, finish_batch)
    return app


# -- on-chain anomalies ------------------------------------------------------------------


def add_onchain_agents(
    app: faust.App,
    settings: Settings,
    anomaly_rules: AnomalyRules,
    raw_topic: Callable[..., Any],
    publish: Callable[[Any, list[tuple[bytes, bytes]]], Awaitable[None]],
    finish_batch: Callable[[str, list[Any], Any, dict[bytes, Any]], Awaitable[None]],
) -> None:
    """candles -> prices broadcast; onchain.* + prices -> on-chain anomalies."""
    token_prices = load_token_prices(settings.token_prices)
    if token_prices.pricing.interval not in settings.candle_intervals:
        raise TokenPricesError(
            f"the pricing interval {token_prices.pricing.interval!r} is not a candle "
            f"interval the processor builds ({', '.join(settings.candle_intervals)})"
        )
    candles = raw_topic(settings.topic("candles"))
    anomalies = raw_topic(settings.topic("anomalies"))
    dlq = raw_topic(settings.topic("dlq"))
    prices = raw_topic(
        prices_topic(settings),
        partitions=settings.topic_partitions,
        internal=True,
        retention=7 * 24 * 3600.0,
    )
    sources: dict[str, Source] = {
        settings.topic("onchain.blocks"): "block",
        settings.topic("onchain.transfers"): "transfer",
        prices_topic(settings): "price",
    }
    chain_inputs = raw_topic(*sources)
    onchain_state = app.Table(
        "onchain-state",
        default=None,
        key_type=bytes,
        use_partitioner=True,
        partitions=settings.topic_partitions,
    )
    feed = PriceFeed(token_prices)
    onchain_logic = OnchainStream(
        anomaly_rules, token_prices, sources, partitions=settings.topic_partitions
    )

    @app.agent(candles)
    async def broadcast_prices(stream: Any) -> None:
        async for events in stream.take_events(
            settings.processor_batch_size, within=settings.processor_batch_seconds
        ):
            result = feed.process(raw_records(events))
            for key, value in result.points:
                for partition in range(settings.topic_partitions):
                    await prices.send(key=key, value=value, partition=partition)
            await publish(dlq, result.dead_letters)
            await app.producer.flush()
            metrics.EVENTS_PROCESSED.labels("prices").inc(len(events))
            metrics.PRICE_POINTS.inc(len(result.points))
            metrics.DEAD_LETTERS.labels("schema").inc(len(result.dead_letters))

    @app.agent(chain_inputs)
    async def watch_chains(stream: Any) -> None:
        async for events in stream.take_events(
            settings.processor_batch_size, within=settings.processor_batch_seconds
        ):
            result = onchain_logic.process(raw_records(events), onchain_state.get)
            await publish(anomalies, result.anomalies)
            await publish(dlq, result.dead_letters)
            await finish_batch("onchain", events, onchain_state, result.states)
            metrics.REPLAYED_SKIPPED.inc(result.skipped)
            metrics.DEAD_LETTERS.labels("schema").inc(len(result.dead_letters))
            for kind, found in result.anomaly_kinds.items():
                metrics.ANOMALIES_EMITTED.labels(kind).inc(found)
            for outcome, seen in result.pricing.items():
                metrics.WHALE_PRICING.labels(outcome).inc(seen)
