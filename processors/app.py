"""The Faust app: thin shells that feed micro-batches to the pure stream logic and
publish what it returns.

Four agents, one loop (`AgentRunner`): each takes `take_events` micro-batches, runs a
pure step over them and keeps its state in a changelogged table:

- trades -> `CandleStream`: candles, indicators, signals, price-jump / volume-spike /
  stale-feed anomalies, and every closed candle again keyed by symbol on an internal
  topic (`<app id>-candles-by-symbol`);
- candles by symbol -> `CrossStream`: cross-exchange spreads (as `indicators` records)
  and divergence anomalies;
- signals + anomalies -> `AlertStream`: alerts keyed by rule id;
- on-chain (see `onchain_stream.py`): the trades agent's candles -> `PriceFeed` -> closes
  broadcast to every partition of `<app id>-asset-prices`; onchain.blocks +
  onchain.transfers + those prices -> `OnchainStream`: gas-spike, reorg and
  whale-transfer anomalies.

Guarantee: at-least-once delivery from Faust, completed where it skips records by the
input offsets kept in state (`input_positions.py`), made effectively-once for state by
those offsets and the last-offset check each stream keeps per key, and for output by
deterministic records (natural keys, deterministic anomaly and alert ids), which the
ClickHouse sink and webhook receivers deduplicate. Each batch's outputs and changelog
are delivered before its offsets can be acked. Faust's `exactly_once` mode was tried
against Kafka 4.4 and never consumed its own repartitioned records, so it is not used.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
import mode
from aiokafka.admin import NewTopic
from faust.auth import Credentials
from faust.worker import Worker

from processors import faust_transport, metrics
from processors.alert_stream import AlertStream
from processors.alerts import AlertEngine, load_alert_rules
from processors.anomalies.rules import AnomalyRules, load_anomaly_rules
from processors.candle_stream import CandleStream, RawRecord
from processors.cross_stream import CrossStream
from processors.exceptions import TokenPricesError
from processors.input_positions import InputPositions
from processors.onchain_stream import OnchainStream, PriceFeed, Source
from processors.placement import key_partition
from processors.pricing import TokenPrices, load_token_prices
from processors.signals import SignalEngine, load_rules
from processors.state_table import ChangelogRecord, KeyPartitionedTable
from schemas.topics import DAY_MS
from sigflow import tracing
from sigflow.kafka import ensure_topics
from sigflow.kafka_security import kafka_security_options
from sigflow.settings import Settings

log = logging.getLogger(__name__)


def faust_broker_url(bootstrap: str) -> str:
    """Faust's broker URL list for a Kafka bootstrap string, on sigflow's transport
    (`processors.faust_transport`)."""
    return ";".join(f"{faust_transport.SCHEME}://{host.strip()}" for host in bootstrap.split(","))


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


def internal_topics(settings: Settings, app: faust.App) -> list[NewTopic]:
    """Internal topics that must exist with `topic_partitions` partitions before the worker
    starts: the asset prices must be co-partitioned with the on-chain topics, candles by
    symbol spread the cross-exchange work over the partitions, and each table's changelog
    must match its input's partitions. Left to be created on first use, a topic came out
    wrong: the broker auto-creates one partition, and Faust declared the changelogs only
    once the worker was already consuming, after its first assignment had left them out.
    """
    streams = [
        NewTopic(
            name=name,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication,
            topic_configs={"retention.ms": str(7 * DAY_MS), "cleanup.policy": "delete"},
        )
        for name in (prices_topic(settings), by_symbol_topic(settings))
    ]
    changelogs = [
        NewTopic(
            name=table.changelog_topic.get_topic_name(),
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication,
            topic_configs={"cleanup.policy": "compact"},  # as Faust declares them
        )
        for table in app.tables.values()
    ]
    return streams + changelogs


async def ensure_processor_topics(settings: Settings, app: faust.App) -> None:
    """Create the registry topics and `app`'s internal topics, before its worker starts."""
    await ensure_topics(settings, extra=internal_topics(settings, app))


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


Records = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Output:
    """Records one batch sends to one topic (to every partition of it: `broadcast`)."""

    topic: str
    records: Records
    broadcast: bool = False


@dataclass(frozen=True)
class Step:
    """What one batch produced: its outputs and the new state per table key."""

    outputs: list[Output]
    states: dict[bytes, Any] = field(default_factory=dict)


def faust_app(settings: Settings) -> faust.App:
    """The processor's Faust app: its Kafka, offset and failure settings, no agents."""
    return faust.App(
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
        Table=KeyPartitionedTable,
        # An agent that raises stops the worker (exit 1) with its batch unacked, for the
        # orchestrator to restart; by default Faust logs the crash and keeps the worker
        # running without that agent, and its partitions silently stop.
        agent_supervisor=mode.CrashingSupervisor,
        key_serializer="raw",
        value_serializer="json",
        datadir=str(settings.data_dir / "processor"),
        # Large enough that a micro-batch's outputs take one or a few record batches per
        # partition: each further one waits a round trip (see `AgentRunner.publish`).
        producer_max_batch_size=settings.processor_record_batch_bytes,
    )


class DeadlineWorker(Worker):  # type: ignore[misc]
    """A Faust worker that exits at most `shutdown_timeout_seconds` after SIGTERM/SIGINT.

    With its broker unreachable, Faust's stop waits on aiokafka's consumer, which waits on
    its fetch retries: a worker asked to stop did not exit within 30 s, and an
    orchestrator would kill it anyway. Exiting is safe at any point: a batch is acked only
    once its outputs and state are delivered, so an unfinished one is read again.
    """

    shutdown_timeout_seconds: float = 20.0

    def _schedule_shutdown(self, received: signal.Signals) -> None:
        if not self._signal_stop_time:  # the first signal starts the clock
            deadline = threading.Timer(self.shutdown_timeout_seconds, self._give_up, (received,))
            deadline.daemon = True
            deadline.start()
        super()._schedule_shutdown(received)

    def _give_up(self, received: signal.Signals) -> None:
        log.error(
            "the worker did not stop within %g s of %s (is Kafka reachable?); exiting "
            "without finishing: unacked records are read again on restart",
            self.shutdown_timeout_seconds,
            received.name,
        )
        logging.shutdown()  # flush the handlers: os._exit skips it
        os._exit(1)


def faust_worker(
    app: faust.App, settings: Settings, worker_class: type[DeadlineWorker] = DeadlineWorker
) -> Worker:
    """A Faust worker for `app` that logs through the handler `configure_logging` set up
    and draws no terminal spinner (it writes escape codes into the log).

    Left to its own logging set-up, Faust adds its handlers and, for the spinner, sets the
    root logger to DEBUG: aiokafka's debug line for every produced record is then built
    into a log record only for the handler to drop it (a tenth of a busy worker's CPU).
    Building the worker also sets the process's garbage-collector thresholds
    (`WORKER_GC_THRESHOLDS`). It stops within `SIGFLOW_SHUTDOWN_TIMEOUT_SECONDS` of a
    signal (`DeadlineWorker`).
    """
    worker = worker_class(
        app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False
    )
    worker.spinner = None
    worker.shutdown_timeout_seconds = settings.shutdown_timeout_seconds
    gc.set_threshold(*WORKER_GC_THRESHOLDS)
    return worker


# The cyclic collector's generation thresholds in a processor worker. Every closed
# candle allocates a few dozen short-lived containers (its structs, indicator and
# detector values, state dicts) and no cycles, so CPython's default (700, 10, 10) ran a
# young-generation pass every ~20 candles and a full pass over Faust's large heap every
# ~100 young ones: ~15% of the candle hot path and of a busy worker's time
# (`sigflow bench worker`: 66k -> 79k trades/s at replay density). Cycles are still
# collected, only in larger, rarer passes; a young pass over 50,000 objects takes ~2 ms.
WORKER_GC_THRESHOLDS = (50_000, 20, 100)


def create_app(settings: Settings) -> faust.App:
    """The processor app with its topics, state tables and agents."""
    app = faust_app(settings)
    candles = settings.topic("candles")
    indicators = settings.topic("indicators")
    signals = settings.topic("signals")
    anomalies = settings.topic("anomalies")
    alerts = settings.topic("alerts")
    dlq = settings.topic("dlq")
    by_symbol = by_symbol_topic(settings)

    anomaly_rules = load_anomaly_rules(settings.anomaly_rules)
    token_prices, price_feed = load_price_feed(settings)
    asset_prices = prices_topic(settings)
    candle_logic = CandleStream(
        settings.candle_intervals,
        settings.allowed_lateness_ms,
        SignalEngine(load_rules(settings.signal_rules)),
        anomaly_rules,
        partitions=settings.topic_partitions,
    )
    cross_logic = CrossStream(anomaly_rules.divergence)
    alert_logic = AlertStream(
        AlertEngine(
            load_alert_rules(settings.alert_rules, built_intervals=settings.candle_intervals)
        ),
        {settings.topic("signals"): "signal", settings.topic("anomalies"): "anomaly"},
    )

    agents = AgentRunner(app, settings)
    candle_state = agents.table("candle-state")
    cross_state = agents.table("cross-state")
    alert_state = agents.table("alert-state")

    def build_candles(records: list[RawRecord]) -> Step:
        result = candle_logic.process(records, candle_state.get)
        metrics.TRADES_PROCESSED.inc(result.trades)
        metrics.REPLAYED_SKIPPED.inc(result.skipped)
        metrics.DEAD_LETTERS.labels("late").inc(result.late)
        metrics.DEAD_LETTERS.labels("schema").inc(len(result.dead_letters) - result.late)
        metrics.CANDLES_EMITTED.inc(len(result.candles))
        metrics.INDICATORS_EMITTED.inc(len(result.indicators))
        metrics.SIGNALS_EMITTED.inc(len(result.signals))
        count_anomalies(result.anomaly_kinds)
        for lateness in result.lateness_ms:
            metrics.TRADE_LATENESS.observe(lateness / 1000)
        points = price_feed.points(result.closed)
        metrics.PRICE_POINTS.inc(len(points))
        return Step(
            [
                Output(candles, result.candles),
                Output(indicators, result.indicators),
                Output(signals, result.signals),
                Output(anomalies, result.anomalies),
                Output(by_symbol, result.by_symbol),
                Output(asset_prices, points, broadcast=True),
                Output(dlq, result.dead_letters),
            ],
            result.states,
        )

    def compare_exchanges(records: list[RawRecord]) -> Step:
        result = cross_logic.process(records, cross_state.get)
        metrics.REPLAYED_SKIPPED.inc(result.skipped)
        metrics.INDICATORS_EMITTED.inc(len(result.indicators))
        metrics.CROSS_LATE_CANDLES.inc(result.late)
        metrics.DEAD_LETTERS.labels("schema").inc(len(result.dead_letters))
        count_anomalies(result.anomaly_kinds)
        return Step(
            [
                Output(indicators, result.indicators),
                Output(anomalies, result.anomalies),
                Output(dlq, result.dead_letters),
            ],
            result.states,
        )

    def raise_alerts(records: list[RawRecord]) -> Step:
        result = alert_logic.process(records, alert_state.get)
        metrics.REPLAYED_SKIPPED.inc(result.skipped)
        metrics.DEAD_LETTERS.labels("schema").inc(len(result.dead_letters))
        for rule, fired in result.fired.items():
            metrics.ALERTS_EMITTED.labels(rule).inc(fired)
        for rule, suppressed in result.suppressed.items():
            metrics.ALERTS_SUPPRESSED.labels(rule).inc(suppressed)
        return Step(
            [Output(alerts, result.alerts), Output(dlq, result.dead_letters)], result.states
        )

    agents.add("trades", [settings.topic("trades")], build_candles, candle_state)
    agents.add("cross", [by_symbol], compare_exchanges, cross_state)
    agents.add("alerts", [signals, anomalies], raise_alerts, alert_state)
    add_onchain_agent(settings, anomaly_rules, token_prices, agents)
    return app


def count_anomalies(kinds: Mapping[str, int]) -> None:
    for kind, found in kinds.items():
        metrics.ANOMALIES_EMITTED.labels(kind).inc(found)


class AgentRunner:
    """Registers the app's agents, all one loop: take a micro-batch, complete it from
    the input positions, run its pure step, send its outputs with its new state and
    positions, wait for all of them to be delivered, then let the batch be acked."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.positions = InputPositions(self.table("input-positions"), settings)

        async def close_positions(sender: Any, *_: Any, **__: Any) -> None:
            await self.positions.close()  # sent once the consumer and agents stopped

        # mode types handlers with mypy_extensions callables no coroutine function matches
        app.on_before_shutdown.connect(close_positions)  # type: ignore[arg-type]

    def table(self, name: str) -> Any:
        """A state table keyed by the raw record key, whose changelog partitions match its
        input's (`KeyPartitionedTable`)."""
        return self.app.Table(
            name, default=None, key_type=bytes, partitions=self.settings.topic_partitions
        )

    def add(
        self,
        name: str,
        sources: list[str],
        step: Callable[[list[RawRecord]], Step],
        table: Any = None,
    ) -> None:
        """Add the agent `name` on the topics `sources`, whose batches go through `step`
        (and whose state, if any, lives in `table`)."""

        async def agent(stream: Any) -> None:
            batches = stream.take_events(
                self.settings.processor_batch_size, within=self.settings.processor_batch_seconds
            )
            async for events in micro_batches(batches, name):
                started = time.perf_counter()
                records = await self.positions.next_records(raw_records(events), name)
                result = step(records)
                changes = self.store(self.positions.table, self.positions.positions_after(records))
                if table is not None:
                    changes += self.store(table, result.states)
                deliveries = await self.publish(result.outputs, changes)
                await asyncio.gather(*deliveries)  # a failed send fails the batch: no ack
                self.observe(name, events, started)

        source = self.app.topic(*sources, key_serializer="raw", value_serializer="raw")
        self.app.agent(source, name=f"sigflow.{name}")(agent)

    async def publish(
        self, outputs: list[Output], changes: list[ChangelogRecord]
    ) -> list[asyncio.Future[Any]]:
        """Hand every output record (to every partition of its topic when `broadcast`)
        and every state change to the producer; the delivery futures of the record
        batches they went out in.

        Straight into aiokafka record batches, one run per topic partition, on Faust's
        producer: `Topic.send` wraps each record in Faust's own future, callbacks and
        sensors, and even aiokafka's `send` costs a coroutine, a metadata check and a
        future per record; once a batch closes thousands of 1 s candles that was most of
        the worker's time. Keys go to the partitions the default partitioner would pick
        (murmur2), each partition's records in order.
        """
        kafka = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        runs: dict[tuple[str, int], list[tuple[bytes, bytes, Any]]] = defaultdict(list)
        for output in outputs:
            if not output.records:
                continue
            partitions = len(await kafka.partitions_for(output.topic))
            for key, value in output.records:
                headers = tracing.output_headers(key)
                targets = (
                    range(partitions) if output.broadcast else (key_partition(key, partitions),)
                )
                for partition in targets:
                    runs[output.topic, partition].append((key, value, headers))
        for change in changes:
            runs[change.topic, change.partition].append((change.key, change.value, None))
        # Concurrently: aiokafka holds a partition's next batch until its previous one
        # left in a request, so one partition at a time paid a round trip per batch.
        sent = await asyncio.gather(
            *(
                send_in_batches(kafka, topic, partition, records)
                for (topic, partition), records in runs.items()
            )
        )
        return [delivery for deliveries in sent for delivery in deliveries]

    def store(self, table: Any, states: Mapping[bytes, Any]) -> list[ChangelogRecord]:
        """Set the batch's new state in `table`; its changelog records, which must be
        delivered before the batch is acked: a rebalance that re-reads the changelog must
        never find it behind the stream, or the input in between would be lost."""
        changes: list[ChangelogRecord] = table.stage(states)
        metrics.TABLE_KEYS.labels(table.name).set(len(table))
        return changes

    def observe(self, name: str, events: list[Any], started: float) -> None:
        metrics.EVENTS_PROCESSED.labels(name).inc(len(events))
        metrics.BATCH_SIZE.labels(name).observe(len(events))
        metrics.BATCH_SECONDS.labels(name).observe(time.perf_counter() - started)
        newest: dict[Any, int] = {}
        for event in events:
            newest[event.message.tp] = event.message.offset
        for tp, offset in newest.items():
            highwater = self.app.consumer.highwater(tp)
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, highwater - offset - 1)
                )


async def send_in_batches(
    kafka: Any, topic: str, partition: int, records: list[tuple[bytes, bytes, Any]]
) -> list[asyncio.Future[Any]]:
    """Send `records` (key, value, headers) to one partition as few record batches as
    the producer's `max_batch_size` allows, in order; their delivery futures."""
    deliveries = []
    batch = kafka.create_batch()
    for key, value, headers in records:
        if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
            deliveries.append(await kafka.send_batch(batch, topic, partition=partition))
            batch = kafka.create_batch()  # a new batch always takes its first record
            batch.append(timestamp=None, key=key, value=value, headers=headers)
    deliveries.append(await kafka.send_batch(batch, topic, partition=partition))
    return deliveries


# -- on-chain anomalies ------------------------------------------------------------------


def load_price_feed(settings: Settings) -> tuple[TokenPrices, PriceFeed]:
    """The token price mappings, and the feed of their markets' closes; the pricing
    interval must be one the processor builds."""
    token_prices = load_token_prices(settings.token_prices)
    if token_prices.pricing.interval not in settings.candle_intervals:
        raise TokenPricesError(
            f"the pricing interval {token_prices.pricing.interval!r} is not a candle "
            f"interval the processor builds ({', '.join(settings.candle_intervals)})"
        )
    return token_prices, PriceFeed(token_prices)


def add_onchain_agent(
    settings: Settings,
    anomaly_rules: AnomalyRules,
    token_prices: TokenPrices,
    agents: AgentRunner,
) -> None:
    """onchain.blocks + onchain.transfers + asset prices -> on-chain anomalies."""
    anomalies = settings.topic("anomalies")
    dlq = settings.topic("dlq")
    sources: dict[str, Source] = {
        settings.topic("onchain.blocks"): "block",
        settings.topic("onchain.transfers"): "transfer",
        prices_topic(settings): "price",
    }
    onchain_state = agents.table("onchain-state")
    onchain_logic = OnchainStream(
        anomaly_rules, token_prices, sources, partitions=settings.topic_partitions
    )

    def watch_chains(records: list[RawRecord]) -> Step:
        result = onchain_logic.process(records, onchain_state.get)
        metrics.REPLAYED_SKIPPED.inc(result.skipped)
        metrics.DEAD_LETTERS.labels("schema").inc(len(result.dead_letters))
        count_anomalies(result.anomaly_kinds)
        for outcome, seen in result.pricing.items():
            metrics.WHALE_PRICING.labels(outcome).inc(seen)
        return Step(
            [Output(anomalies, result.anomalies), Output(dlq, result.dead_letters)], result.states
        )

    agents.add("onchain", list(sources), watch_chains, onchain_state)
