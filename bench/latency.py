"""Benchmark `latency`: trade → signal (and trade → candle) latency at a steady 10,000 trades/s.

Trades are handed to `EventProducer.send_trade` (real batching, 5 ms linger) at a steady
`RATE` by a pacer, while a real worker runs and a subscriber in the bench process reads
its outputs. Event time runs faster than the wall clock (`EVENT_TRADES_PER_SECOND`), so
each of the 8 keys closes a 1-minute window about every 0.25 s.

Latency, precisely: a window (key, open_time) is closed by its **closing trade**, the
first trade of that key, in send order, after which the window's end is at or below the
key's watermark (newest trade time minus `allowed_lateness_ms`) floored to the interval,
the processor's rule (`closing_trades`). The latency of the window's candle (or of a
signal fired on it) is the wall-clock time (`time.time()`, one host) at which the
subscriber's `getmany` returned that record, minus the wall-clock time the closing trade
was handed to the producer. It therefore contains the linger, the produce, the worker's
fetch, its micro-batch wait (`processor_batch_seconds`), processing, output send and
flush, and the subscriber's fetch. The worker first gets the first trade alone (so its
start-up is not timed); windows closed in the first `WARMUP_SECONDS` of the pace are
left out. Before either timed pass, the broker relays `BROKER_WARMUP_TRADES` at the same
pace, untimed: a long-running broker is warm, and a fresh one is not for its first ~20 s.

Signals fire on a bench rules file (`SIGFLOW_SIGNAL_RULES`): close crossing the candle's
VWAP, which flips on about half of all candles, so there are signals to time from the
second candle on; trade → signal is the headline (p50_ms/p99_ms of the JSON line).

Baseline, in the same run on the same trades at the same rate: `bench.relay`, a bare
aiokafka consume → produce relay of the `trades` records, timed for the same closing
trades (when the relayed record holding it was read): the floor any Kafka processor
pays. The worker runs with the settings defaults; the ratio in the JSON line compares
the achieved input rates (about 1: both were fed at the same pace).
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.kafka_run import (
    DEFAULTS,
    WorkerProcess,
    bench_broker,
    bench_settings,
    delete_run_topics,
    run_id,
)
from bench.processors import bench_trades
from bench.relay import RELAY_TOPIC
from bench.report import BenchmarkError, BenchOptions, BenchResult, Measurement
from ingest.producer import EventProducer
from processors.candles import interval_ms
from sigflow.settings import Settings

NAME = "latency"
BASELINE_NAME = "bare aiokafka consume → produce relay (the Kafka floor)"
RATE = 10_000.0  # trades/s handed to the producer
EVENT_TRADES_PER_SECOND = 40.0  # event time: ~300 trades per key-minute over 8 keys
WARMUP_SECONDS = 1.0
# A fresh broker's JVM is still compiling its hot paths for ~20 s of this load: the first
# pass on it measured p99 ~55-65 ms where later passes on the same broker measured ~40.
# Both timed passes run after this much untimed paced load, so neither pays for it.
BROKER_WARMUP_TRADES = 300_000
# Latency is timed on 1m windows, and the worker builds only those: finer candles would
# fire signals on windows the closing-trade matching does not follow.
INTERVAL = "1m"
START_TIMEOUT_SECONDS = 120.0
SETTLE_SECONDS = 10.0  # after the last send, how long outputs may take to arrive
TICK_SECONDS = 0.001
RULES = """\
[[rules]]
id = "close_vwap_cross"
kind = "crossover"
fast = "close"
slow = "vwap"
up = { direction = 1, explanation = "close {fast} crossed above the candle VWAP {slow}" }
down = { direction = -1, explanation = "close {fast} crossed below the candle VWAP {slow}" }
"""

Window = tuple[bytes, int]  # (record key, open_time)


def closing_trades(trades: Sequence[Any], width_ms: int, lateness_ms: int) -> dict[Window, int]:
    """Index (in `trades`) of the trade that closes each window, by the processor's rule.

    A trade whose window had already closed when it came (late) opens nothing; windows
    still open after the last trade are not in the result.
    """
    open_windows: dict[bytes, set[int]] = {}
    newest: dict[bytes, int] = {}
    closed_by: dict[Window, int] = {}
    for index, trade in enumerate(trades):
        key = f"{trade.exchange}:{trade.symbol}".encode()
        windows = open_windows.setdefault(key, set())
        start = trade.ts - trade.ts % width_ms
        if key in newest and start + width_ms <= closed_bound(newest[key], width_ms, lateness_ms):
            continue  # late
        windows.add(start)
        if trade.ts > newest.get(key, -1):
            newest[key] = trade.ts
            bound = closed_bound(trade.ts, width_ms, lateness_ms)
            for done in [w for w in windows if w + width_ms <= bound]:
                windows.discard(done)
                closed_by[(key, done)] = index
    return closed_by


def closed_bound(newest_ts: int, width_ms: int, lateness_ms: int) -> int:
    """Windows ending at or before this are closed: the watermark floored to the interval."""
    watermark = newest_ts - lateness_ms
    return watermark - watermark % width_ms


def trades_due(elapsed_seconds: float, rate: float, total: int) -> int:
    """How many trades a steady `rate` has handed over `elapsed_seconds` after the start."""
    return min(total, max(0, math.floor(elapsed_seconds * rate)))


async def paced_send(
    producer: EventProducer, trades: Sequence[Any], rate: float, handed: list[float], first: int
) -> None:
    """Hand `trades[first:]` to the producer at a steady `rate`, noting each one's
    wall-clock hand-over time in `handed`."""
    sent = first
    started = time.perf_counter()
    while sent < len(trades):
        due = first + trades_due(time.perf_counter() - started, rate, len(trades) - first)
        for index in range(sent, due):
            handed[index] = time.time()
            await producer.send_trade(trades[index], "bench")
        sent = max(sent, due)
        await asyncio.sleep(TICK_SECONDS)


class Subscriber:
    """Reads the output topics from their start, noting when each record arrived."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.topics = topics
        self.records: list[tuple[str, bytes, bytes, float]] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            async with asyncio.timeout(30):
                # A topic created a moment ago may be described without partitions yet.
                while True:
                    described = await admin.describe_topics(self.topics)
                    if all(topic["partitions"] for topic in described):
                        break
                    await asyncio.sleep(0.2)
        finally:
            await admin.close()
        await self.consumer.start()
        partitions = [
            TopicPartition(topic["topic"], p["partition"])
            for topic in described
            for p in topic["partitions"]
        ]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_beginning(*partitions)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            fetched = await self.consumer.getmany(timeout_ms=100)
            now = time.time()
            for tp, records in fetched.items():
                self.records.extend((tp.topic, r.key or b"", r.value or b"", now) for r in records)

    async def settle(self, expected: int) -> None:
        """Wait until at least `expected` records came and no more came for a second (or
        `SETTLE_SECONDS` passed)."""
        deadline = time.monotonic() + SETTLE_SECONDS
        seen = -1
        while time.monotonic() < deadline and (
            len(self.records) < expected or len(self.records) != seen
        ):
            seen = len(self.records)
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()


def output_latencies(
    records: list[tuple[str, bytes, bytes, float]],
    topic: str,
    closing: dict[Window, int],
    handed: list[float],
    since: float,
) -> list[float]:
    """Seconds from the closing trade's hand-over to the arrival of each candle/signal on
    `topic` (records on other topics ignored), for windows closed at or after `since`."""
    arrivals = (
        (key, orjson.loads(value)["open_time"], arrived)
        for record_topic, key, value, arrived in records
        if record_topic == topic
    )
    return window_latencies(arrivals, closing, handed, since, topic)


def window_latencies(
    arrivals: Iterable[tuple[bytes, int, float]],
    closing: dict[Window, int],
    handed: list[float],
    since: float,
    where: str,
) -> list[float]:
    """Seconds from each window's closing trade's hand-over to its (key, open_time,
    arrival time) in `arrivals`, for windows closed at or after `since`; a window no trade
    closed is an error (`where` names the output it was read from)."""
    latencies = []
    for key, open_time, arrived in arrivals:
        index = closing.get((key, open_time))
        if index is None:
            raise BenchmarkError(f"{where}: a window no trade closed: {key!r} {open_time}")
        if handed[index] >= since:
            latencies.append(arrived - handed[index])
    return latencies


def relay_latencies(
    records: list[tuple[str, bytes, bytes, float]],
    closing_ids: dict[tuple[bytes, str], int],
    handed: list[float],
    since: float,
) -> list[float]:
    """Seconds from hand-over to arrival of the relayed record holding each closing trade."""
    latencies = []
    for _, key, value, arrived in records:
        for trade in orjson.loads(value):
            index = closing_ids.get((key, trade["trade_id"]))
            if index is not None and handed[index] >= since:
                latencies.append(arrived - handed[index])
    return latencies


async def timed_pass(
    kind: str,
    settings: Settings,
    run_dir: Path,
    trades: list[Any],
    outputs: list[str],
    expected: int,
    say: Any,
) -> tuple[list[float], list[tuple[str, bytes, bytes, float]], float, float]:
    """Run one worker under paced input: (hand-over times, output records, since, rate)."""
    worker = WorkerProcess(kind, settings, run_dir)
    handed = [0.0] * len(trades)
    async with EventProducer(settings, "bench") as producer:  # creates the topics
        subscriber = Subscriber(settings.kafka_bootstrap, outputs)
        await subscriber.start()
        worker.start()
        try:
            # The first trade alone, to know the worker is consuming before the pace starts.
            handed[0] = time.time()
            await producer.send_trade(trades[0], "bench")
            await producer.flush()
            await worker.wait_for("first_in", START_TIMEOUT_SECONDS)
            say(f"{kind}: sending {len(trades):,} trades at {RATE:,.0f}/s")
            started, since = time.perf_counter(), time.time() + WARMUP_SECONDS
            await paced_send(producer, trades, RATE, handed, first=1)
            rate = (len(trades) - 1) / (time.perf_counter() - started)
            await producer.flush()
            await subscriber.settle(expected)
        finally:
            worker.stop()
            await subscriber.stop()
    return handed, subscriber.records, since, rate


async def create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, DEFAULTS.topic_partitions, DEFAULTS.topic_replication)]
        )
    finally:
        await admin.close()


async def warm_broker(
    bootstrap: str, prefix: str, run_dir: Path, trades: list[Any], say: Any
) -> None:
    """Relay up to `BROKER_WARMUP_TRADES` of `trades` at the pace, untimed."""
    warmup = bench_settings(bootstrap, f"{prefix}-warmup", f"{prefix}-warmup", run_dir / "warmup")
    await create_topic(bootstrap, warmup.topic(RELAY_TOPIC))
    say(f"warming the broker up ({min(len(trades), BROKER_WARMUP_TRADES):,} trades, untimed)")
    await timed_pass(
        "relay", warmup, run_dir, trades[:BROKER_WARMUP_TRADES], [warmup.topic(RELAY_TOPIC)], 0, say
    )


def _ms(values: list[float], quantile: float) -> float:
    return Measurement("", (1.0,), tuple(values)).latency_ms(quantile) or math.nan


async def measure(options: BenchOptions, bootstrap: str, run_dir: Path) -> dict[str, Any]:
    prefix = run_id()
    rules = run_dir / "rules.toml"
    rules.write_text(RULES)
    trades = bench_trades(options.trades, options.seed, options.symbols, EVENT_TRADES_PER_SECOND)
    closing = closing_trades(trades, interval_ms(INTERVAL), DEFAULTS.allowed_lateness_ms)
    closing_ids = {(key, trades[i].trade_id): i for (key, _), i in closing.items()}
    sigflow = bench_settings(
        bootstrap,
        f"{prefix}-sigflow",
        f"{prefix}-sigflow",
        run_dir / "sigflow",
        signal_rules=rules,
        candle_intervals=[INTERVAL],
    )
    relay = bench_settings(bootstrap, f"{prefix}-relay", f"{prefix}-relay", run_dir / "relay")
    try:
        await warm_broker(bootstrap, prefix, run_dir, trades, options.say)
        handed, records, since, sigflow_rate = await timed_pass(
            "sigflow",
            sigflow,
            run_dir,
            trades,
            [sigflow.topic("candles"), sigflow.topic("signals")],
            len(closing),
            options.say,
        )
        candle = output_latencies(records, sigflow.topic("candles"), closing, handed, since)
        signal = output_latencies(records, sigflow.topic("signals"), closing, handed, since)
        await create_topic(bootstrap, relay.topic(RELAY_TOPIC))
        handed, records, since, relay_rate = await timed_pass(
            "relay", relay, run_dir, trades, [relay.topic(RELAY_TOPIC)], 0, options.say
        )
        floor = relay_latencies(records, closing_ids, handed, since)
    finally:
        await delete_run_topics(bootstrap, prefix)
    if not signal or not floor:
        raise BenchmarkError(
            f"nothing to time: {len(signal)} signals, {len(floor)} relayed closing trades "
            "after the warm-up (more --trades?)"
        )
    return {
        "signal": signal,
        "candle": candle,
        "floor": floor,
        "rates": (sigflow_rate, relay_rate),
        "windows": len(closing),
    }


def run(options: BenchOptions) -> BenchResult:
    """p50/p99 trade → signal latency of a real worker at 10,000 trades/s vs a bare relay.

    One paced pass per contender on the same trades (`--trades` / 10,000 seconds each).
    """
    with (
        bench_broker(options.say) as broker,
        tempfile.TemporaryDirectory(prefix="sigflow-bench-latency-") as run_dir,
    ):
        measured = asyncio.run(measure(options, broker.bootstrap, Path(run_dir)))
    signal, candle, floor = measured["signal"], measured["candle"], measured["floor"]
    sigflow_rate, relay_rate = measured["rates"]
    return BenchResult(
        bench=NAME,
        unit="trades/s",
        sigflow=Measurement(
            "processors.app worker, trade → signal (rules: close crosses VWAP)",
            (sigflow_rate,),
            tuple(signal),
        ),
        baseline=Measurement(
            BASELINE_NAME + ", trade → relayed record", (relay_rate,), tuple(floor)
        ),
        baseline_name=BASELINE_NAME,
        title=f"latency at a steady {RATE:,.0f} trades/s through Kafka",
        latency_label="trade →",
        parameters={
            "broker": broker.description,
            "trades": f"{options.trades:,}",
            "broker_warmup_trades": f"{min(options.trades, BROKER_WARMUP_TRADES):,}",
            "keys": options.symbols,
            "windows": measured["windows"],
            "signals_timed": len(signal),
            "candles_timed": len(candle),
            "candle_p50_ms": f"{_ms(candle, 0.5):.1f}",
            "candle_p99_ms": f"{_ms(candle, 0.99):.1f}",
            "linger_ms": DEFAULTS.ingest_linger_ms,
            "batch_seconds": DEFAULTS.processor_batch_seconds,
        },
        extra={
            "candle_p50_ms": round(_ms(candle, 0.5), 3),
            "candle_p99_ms": round(_ms(candle, 0.99), 3),
            "baseline_p50_ms": round(_ms(floor, 0.5), 3),
            "baseline_p99_ms": round(_ms(floor, 0.99), 3),
        },
    )
