"""The shared ingest producer: bounded in-flight records, and a broker outage survived.

The outage test runs its own Apache Kafka broker, because it stops and restarts it.
"""

from __future__ import annotations

import asyncio
import gc

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from ingest import metrics
from ingest.producer import EventProducer
from schemas.codec import codec_for
from schemas.events import Trade
from sigflow.settings import Settings
from sigflow.stack.kafka import KafkaBroker

pytestmark = pytest.mark.integration
TRADE = codec_for(Trade)


async def consume_values(settings: Settings, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of the first `count` records of `topic`, in partition order per key."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend((r.key or b"", r.value or b"") for r in records)
        # nothing beyond `count`: a duplicate would show up here
        extra = await consumer.getmany(timeout_ms=1000)
        found.extend((r.key or b"", r.value or b"") for rs in extra.values() for r in rs)
    finally:
        await consumer.stop()
    return found


def in_key_order(found: list[tuple[bytes, bytes]], key: bytes) -> list[int]:
    return [int(value) for k, value in found if k == key]


async def test_pending_records_never_exceed_the_bound_and_all_arrive_in_key_order(
    pipeline_settings: Settings,
) -> None:
    settings = pipeline_settings.model_copy(update={"ingest_max_pending": 8})
    topic = settings.topic("trades")
    peak = 0
    async with EventProducer(settings, component="test") as producer:
        for i in range(2_000):
            await producer.send(topic, f"k{i % 3}".encode(), str(i).encode(), "test")
            peak = max(peak, int(metrics.PRODUCER_PENDING._value.get()))
        await producer.flush()
    assert 0 < peak <= 8
    found = await consume_values(settings, topic, 2_000)
    assert len(found) == 2_000
    for k in range(3):
        assert in_key_order(found, f"k{k}".encode()) == list(range(k, 2_000, 3))


async def test_batched_trades_keep_each_keys_order_when_linger_and_full_batches_race(
    pipeline_settings: Settings,
) -> None:
    """A burst faster than the linger: the linger task sends each key's first batch while
    the reader cuts the next ones, and both wait for aiokafka (topic metadata at first)."""
    trades = [
        TRADE.build(
            exchange="binance", symbol=f"S{i % 4}-USDT", trade_id=str(i), price=1.0, size=1.0,
            side="buy", ts=1_700_000_000_000 + i, received_ts=1_700_000_000_000 + i,
        )
        for i in range(8_000)
    ]  # fmt: skip
    async with EventProducer(pipeline_settings, component="test") as producer:
        for trade in trades:
            await producer.send_trade(trade, "test")
        await producer.flush()
    records = (
        8_000 + pipeline_settings.ingest_batch_trades - 1
    ) // pipeline_settings.ingest_batch_trades
    found = await consume_values(pipeline_settings, pipeline_settings.topic("trades"), records)
    sent: dict[bytes, list[str]] = {}
    for trade in trades:
        sent.setdefault(f"{trade.exchange}:{trade.symbol}".encode(), []).append(trade.trade_id)
    received: dict[bytes, list[str]] = {}
    for key, value in found:
        received.setdefault(key, []).extend(t["trade_id"] for t in orjson.loads(value))
    assert received == sent


# aiokafka leaves the sockets of a broker that vanished to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_broker_outage_makes_senders_wait_and_then_delivers_everything_once(
    own_broker: KafkaBroker, pipeline_settings: Settings
) -> None:
    settings = pipeline_settings.model_copy(
        update={"kafka_bootstrap": own_broker.bootstrap, "ingest_max_pending": 50}
    )
    topic = settings.topic("trades")
    total = 400
    sent = 0
    async with EventProducer(settings, component="test") as producer:

        async def send_all() -> None:
            nonlocal sent
            for i in range(total):
                await producer.send(topic, b"only-key", str(i).encode(), "test")
                sent = i + 1
                await asyncio.sleep(0.005)

        sender = asyncio.create_task(send_all())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(own_broker.stop)
        await asyncio.sleep(3)
        stalled_at = sent
        await asyncio.sleep(2)
        assert sent == stalled_at < total, "senders must wait while the broker is down"
        await asyncio.to_thread(own_broker.start)
        await asyncio.wait_for(sender, 90)
        await producer.flush()
    found = await consume_values(settings, topic, total)
    assert in_key_order(found, b"only-key") == list(range(total))
    gc.collect()  # those sockets are reclaimed here, where the warning is expected
