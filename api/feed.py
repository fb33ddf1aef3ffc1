"""The API process's one topic consumer: keeps the price book and feeds the stream hub.

No consumer group: every API process reads every partition of the output topics itself
(it serves what it saw, and nothing needs committing). On start it rewinds a little
(`api_stream_recent` records per partition, more for trades) so the book and the recent
events are filled without waiting for new traffic; anything older comes from the
warehouse (`load_latest_prices`).

Trades can arrive at 100k/s, so they are conflated: per fetched partition only the last
record of each `exchange:symbol` key is decoded (a key lives in one partition, in order),
and that last price is what the `prices` stream topic carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.exceptions import ClickHouseError
from prometheus_client import Counter, Gauge

from api.fanout import Hub, StreamEvent
from api.pricebook import LastTrade, PriceBook
from schemas.codec import Codec, codec_for
from schemas.events import Alert, Anomaly, Candle, IndicatorValues, OnchainTransfer, Signal, Trade
from schemas.exceptions import SchemaError
from schemas.topics import TOPICS
from sigflow.exceptions import StackError
from sigflow.kafka import ensure_topics, topic_partitions
from sigflow.settings import Settings

log = logging.getLogger(__name__)

FEED_RECORDS = Counter(
    "sigflow_api_feed_records_total", "Records the API's topic consumer read.", ["topic"]
)
FEED_REJECTED = Counter(
    "sigflow_api_feed_rejected_total", "Records the API could not decode (skipped).", ["topic"]
)
FEED_LAG = Gauge("sigflow_api_feed_lag_records", "Records the API's topic consumer is behind.")

PRICE_ENCODER = msgspec.json.Encoder()
RETRY_SECONDS = 2.0
CONNECT_SECONDS = 3.0  # bounds each connection attempt, and so how long stop() waits
STOP_SECONDS = 10.0
TRADES_REWIND = 1_000  # per partition: enough to see every active key again
YIELD_EVERY = 100  # events published between yields, so client writers keep up


@dataclass(frozen=True)
class StreamTopic:
    """How one Kafka topic appears on the live stream."""

    source: str  # registry name of the Kafka topic
    name: str  # topic name clients subscribe to
    codec: Codec[Any]


STREAM_TOPICS: dict[str, StreamTopic] = {
    topic.name: topic
    for topic in (
        StreamTopic("trades", "prices", codec_for(Trade)),
        StreamTopic("candles", "candles", codec_for(Candle)),
        StreamTopic("indicators", "indicators", codec_for(IndicatorValues)),
        StreamTopic("signals", "signals", codec_for(Signal)),
        StreamTopic("anomalies", "anomalies", codec_for(Anomaly)),
        StreamTopic("alerts", "alerts", codec_for(Alert)),
        StreamTopic("onchain.transfers", "onchain.transfers", codec_for(OnchainTransfer)),
    )
}


def stream_event(topic: StreamTopic, event: Any) -> StreamEvent:
    """The message clients receive: `{"topic": NAME, "data": EVENT}` as one JSON line."""
    payload = b'{"topic":"%s","data":%s}' % (topic.name.encode(), topic.codec.encode(event))
    return StreamEvent(topic.name, getattr(event, "symbol", None), payload)


def price_event(trade: LastTrade) -> StreamEvent:
    """A `prices` message: the last trade of one exchange and symbol."""
    payload = b'{"topic":"prices","data":%s}' % PRICE_ENCODER.encode(trade)
    return StreamEvent("prices", trade.symbol, payload)


def last_per_key(records: list[ConsumerRecord]) -> list[ConsumerRecord]:
    """The last record of each key, in offset order (one partition's fetch)."""
    seen: dict[bytes | None, ConsumerRecord] = {}
    for record in reversed(records):
        if record.key not in seen:
            seen[record.key] = record
    return sorted(seen.values(), key=lambda record: record.offset)


class TopicFeed:
    """Owns the consumer task; `lag()` and `connected` feed the readiness probe."""

    def __init__(self, settings: Settings, book: PriceBook, hub: Hub) -> None:
        self.settings = settings
        self.book = book
        self.hub = hub
        self.connected = False
        self._by_kafka_topic = {settings.topic(t.source): t for t in STREAM_TOPICS.values()}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._lag: int | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Run the consumer in the background; it reconnects until `stop()`."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="sigflow-api-feed")

    async def stop(self) -> None:
        """Let the consumer finish its fetch and close (cancel it if that takes too
        long); safe twice. Not cancelled outright: a Kafka client cancelled while
        connecting leaks its connections."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_SECONDS)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def lag(self) -> int | None:
        """Records behind the end of the assigned partitions; None when not consuming."""
        return self._lag if self.connected else None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._consume()
            except (KafkaError, StackError, OSError) as exc:
                log.warning(
                    "api topic feed lost Kafka, retrying",
                    extra={"error": str(exc), "retry_seconds": RETRY_SECONDS},
                )
            finally:
                self.connected = False
                FEED_LAG.set(0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RETRY_SECONDS)

    async def _consume(self) -> None:
        await ensure_topics(self.settings, timeout=CONNECT_SECONDS)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=int(CONNECT_SECONDS * 1000),
        )
        try:
            await consumer.start()
            partitions = await self._assign(consumer)
            self.connected = True
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for tp, records in batches.items():
                    await self._publish(self._by_kafka_topic[tp.topic], records)
                lag = 0
                for tp in partitions:
                    position = await consumer.position(tp)
                    lag += max(0, (consumer.highwater(tp) or position) - position)
                self._lag = lag
                FEED_LAG.set(self._lag)
        finally:
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        partitions = await topic_partitions(self.settings, list(self._by_kafka_topic))
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        self._lag = 0
        for tp in partitions:
            rewind = TRADES_REWIND if tp.topic == self.settings.topic("trades") else 0
            start = max(starts[tp], ends[tp] - max(rewind, self.settings.api_stream_recent))
            consumer.seek(tp, start)
            self._lag += ends[tp] - start
        return partitions

    @staticmethod
    def _decode(topic: StreamTopic, value: bytes | None) -> Any:
        """One event of a record; of a batched record (`trades`), its newest valid one."""
        if not TOPICS[topic.source].batched:
            return topic.codec.decode(value)
        events, _ = topic.codec.decode_batch(value)
        if not events:
            raise SchemaError("no valid event in the batch")
        return events[-1]

    async def _publish(self, topic: StreamTopic, records: list[ConsumerRecord]) -> None:
        FEED_RECORDS.labels(topic.source).inc(len(records))
        if topic.name == "prices":
            records = last_per_key(records)
        for i, record in enumerate(records, 1):
            try:
                event = self._decode(topic, record.value)
            except SchemaError:
                FEED_REJECTED.labels(topic.source).inc()
                continue
            if topic.name == "prices":
                trade = LastTrade(
                    event.exchange, event.symbol, event.price, event.size, event.side, event.ts
                )
                if self.book.update(trade):
                    self.hub.publish(price_event(trade), remember=False)
            else:
                self.hub.publish(stream_event(topic, event))
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0)


LATEST_TRADES_SQL = """
SELECT exchange, symbol, argMax(price, ts), argMax(size, ts), argMax(toString(side), ts),
       toUnixTimestamp64Milli(max(ts))
FROM {db}.trades
WHERE ts >= (SELECT max(ts) FROM {db}.trades) - INTERVAL 1 DAY
GROUP BY exchange, symbol
"""


async def load_latest_prices(client: AsyncClient, database: str, book: PriceBook) -> int:
    """Fill the book from the warehouse's newest trades (the last day of them); the
    number of exchange/symbol pairs loaded. A missing table is an empty warehouse."""
    try:
        result = await client.query(LATEST_TRADES_SQL.format(db=database))
    except ClickHouseError as exc:
        log.warning("no cold-start prices from the warehouse", extra={"error": str(exc)})
        return 0
    loaded = 0
    for exchange, symbol, price, size, side, ts in result.result_rows:
        loaded += book.update(LastTrade(exchange, symbol, price, size, side, ts, "warehouse"))
    return loaded


def now_ms() -> int:
    return time.time_ns() // 1_000_000
