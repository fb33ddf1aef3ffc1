"""`sigflow bench ingest`: exchange messages/s into Kafka, against a bare aiokafka producer.

sigflow's path is the real hot path of `sigflow ingest exchanges` after the socket:
raw Binance `@trade` messages, as `recv()` returns them, go through
`FeedConnection.handle_message()` (metrics, `Binance.parse` into validated `Trade`
structs, `ExchangeFeed.publish` with duplicate and gap checks, event-lag metric) and the
shared `EventProducer` (bounded in-flight records, keyed, idempotent, acks=all, lz4).
The baseline is a bare `AIOKafkaProducer` with the same settings sending the same
keys and trade bytes (already encoded) one `send()` at a time. Both write to the same
real broker (`SIGFLOW_KAFKA_BOOTSTRAP`, or a running `sigflow stack`), under a topic
prefix of their own; repetitions alternate who goes first. The WebSocket transport is
left out on purpose: it is the same for any client and would hide sigflow's own cost.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson

from bench.report import BenchmarkError, BenchOptions, BenchResult, Measurement
from ingest.exchanges.binance import Binance
from ingest.exchanges.feed import ExchangeFeed
from ingest.producer import TRADE_CODEC, EventProducer
from sigflow.kafka import create_producer, ensure_topics
from sigflow.settings import Settings, load_settings

NAME = "ingest"
BASELINE_NAME = "bare AIOKafkaProducer.send (acks=all, idempotent, lz4), same bytes"
START_TS = 1_767_225_600_000


def binance_messages(count: int, symbols: int, first_id: int) -> tuple[list[str], list[bytes]]:
    """Normalized symbols and `count` raw Binance trade messages spread over them."""
    names = [f"C{i}-USDT" for i in range(symbols)]
    messages = []
    for n in range(count):
        native = names[n % symbols].replace("-", "")
        message = {
            "e": "trade",
            "E": START_TS + n + 1,
            "s": native,
            "t": first_id + n // symbols,
            "p": f"{100 + n % 97}.{n % 100:02d}",
            "q": f"0.{n % 9 + 1}",
            "T": START_TS + n,
            "m": n % 3 == 0,
            "M": True,
        }
        messages.append(orjson.dumps(message))
    return names, messages


async def _sigflow_pass(settings: Settings, names: list[str], messages: list[bytes]) -> float:
    async with EventProducer(settings, component="bench.ingest") as producer:
        feed = ExchangeFeed(Binance(names), settings, producer)
        connection = feed.connections[0]
        started = time.perf_counter()
        for raw in messages:
            await connection.handle_message(raw)
        await producer.flush()
        elapsed = time.perf_counter() - started
        await feed.backfill.close()
    return elapsed


async def _baseline_pass(settings: Settings, records: list[tuple[bytes, bytes]]) -> float:
    producer = create_producer(settings, request_timeout_ms=settings.kafka_delivery_timeout_ms)
    await producer.start()
    try:
        topic = settings.topic("trades")
        started = time.perf_counter()
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
        return time.perf_counter() - started
    finally:
        await producer.stop()


def _encoded(names: list[str], messages: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The (key, value) records sigflow produces for `messages`: the baseline's input."""
    adapter = Binance(names)
    records = []
    for raw in messages:
        for trade in adapter.parse(raw, START_TS).trades:
            records.append((f"{trade.exchange}:{trade.symbol}".encode(), TRADE_CODEC.encode(trade)))
    return records


async def _measure(settings: Settings, options: BenchOptions) -> tuple[list[float], list[float]]:
    await ensure_topics(settings)
    rates: dict[str, list[float]] = {"sigflow": [], "baseline": []}
    for repetition in range(options.repeats):
        # fresh ids every repetition: the feed would rightly drop repeated trades
        names, messages = binance_messages(
            options.trades, options.symbols, first_id=1 + repetition * options.trades
        )
        records = _encoded(names, messages)
        if len(records) != len(messages):
            raise BenchmarkError("the contenders would not send the same records")
        order = ["sigflow", "baseline"] if repetition % 2 == 0 else ["baseline", "sigflow"]
        for who in order:
            if who == "sigflow":
                seconds = await _sigflow_pass(settings, names, messages)
            else:
                seconds = await _baseline_pass(settings, records)
            rates[who].append(len(messages) / seconds)
        options.say(
            f"repetition {repetition + 1}/{options.repeats}: "
            + ", ".join(f"{who} {rates[who][-1]:,.0f} msg/s" for who in rates)
        )
    return rates["sigflow"], rates["baseline"]


def run(options: BenchOptions) -> BenchResult:
    """Exchange messages/s through sigflow's ingest path vs a bare aiokafka producer."""
    from sigflow.stack import adjust_for_local_stack

    base = adjust_for_local_stack(load_settings())
    settings = base.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}."})
    options.say(f"broker {settings.kafka_bootstrap}, topics {settings.topic_prefix}*")
    sigflow_rates, baseline_rates = asyncio.run(_measure(settings, options))
    return BenchResult(
        bench=NAME,
        unit="messages/s",
        sigflow=Measurement(
            "raw Binance messages -> FeedConnection.handle_message -> EventProducer -> Kafka",
            tuple(sigflow_rates),
        ),
        baseline=Measurement(BASELINE_NAME, tuple(baseline_rates)),
        baseline_name=BASELINE_NAME,
        title="exchange trade messages into Kafka",
        parameters={
            "messages": f"{options.trades:,}",
            "symbols": options.symbols,
            "repeats": options.repeats,
            "broker": settings.kafka_bootstrap,
        },
    )
