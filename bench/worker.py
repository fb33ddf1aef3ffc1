"""Benchmark `worker`: trades/s of a real Faust worker draining a `trades` topic on Kafka.

Both contenders read the same synthetic trades from a real broker, each from its own
pre-filled topic, in its own worker process:

- sigflow: `processors.app.create_app` run by a Faust `Worker` (as `sigflow process`
  runs it), reading records written by `EventProducer.send_trade` (JSON arrays of up to
  `ingest_batch_trades` trades of one key) and writing candles, indicators and signals.
- baseline: `bench.naive_agent`, one trade object per record (written by the same
  `EventProducer`), `json.loads` + `Trade.model_validate` + dict OHLCV + one awaited
  `send` per closed candle (candles only).

Timed: from the wall-clock moment the first input record reached the agent to the
moment the last record of every input partition was acked (processed, its outputs
delivered), as the worker's `DrainSensor` notes them; start-up (group join, changelog
topics) is excluded. Each repetition is a fresh worker with a fresh consumer group (and
changelog) on the same trades (sigflow's on fresh topics: `repetition_prefix`);
afterwards its committed offsets must show zero lag, and both contenders must have
written the same candles (`check_same_work`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.kafka_run import (
    DEFAULTS,
    WorkerProcess,
    bench_broker,
    bench_settings,
    delete_run_topics,
    end_offsets,
    read_topic,
    run_id,
)
from bench.processors import BASELINE_NAME as CPU_BASELINE_NAME
from bench.processors import PathRun, bench_trades, check_same_work, event_rate
from bench.report import BenchmarkError, BenchOptions, BenchResult, Measurement
from ingest.producer import EventProducer
from schemas.codec import codec_for
from schemas.events import Trade
from sigflow.kafka import consumer_lag
from sigflow.settings import Settings

NAME = "worker"
BASELINE_NAME = "naive per-event Faust agent: " + CPU_BASELINE_NAME.split(": ", 1)[1]
PATHS = ("sigflow", "baseline")
KINDS = {"sigflow": "sigflow", "baseline": "naive"}
START_TIMEOUT_SECONDS = 120.0
SLOWEST_RATE = 1_000.0  # trades/s below which a drain counts as stuck
LAG_TIMEOUT_SECONDS = 30.0


async def fill_input(path: str, settings: Settings, trades: list[Any]) -> dict[int, int]:
    """Write `trades` into the path's `trades` topic (batched for sigflow, one per record
    for the baseline, both through `EventProducer`: keys, partitioner and acks as in
    ingest); the topic's end offsets."""
    async with EventProducer(settings, "bench") as producer:
        if path == "sigflow":
            for trade in trades:
                await producer.send_trade(trade, "bench")
        else:
            codec, topic = codec_for(Trade), settings.topic("trades")
            for trade in trades:
                key = f"{trade.exchange}:{trade.symbol}".encode()
                await producer.send(topic, key, codec.encode(trade), "bench")
        await producer.flush()
    return await end_offsets(settings.kafka_bootstrap, settings.topic("trades"))


def repetition_prefix(prefix: str, path: str, repetition: int) -> str:
    """The topic prefix of one path's repetition.

    sigflow's alerts agent reads the signals and anomalies topics from the start, so a
    repetition on topics an earlier one wrote would also alert on that one's signals:
    each gets fresh topics and its own copy of the input. The naive agent reads only its
    input, which all its repetitions share.
    """
    return f"{prefix}-{path}-{repetition}" if path == "sigflow" else f"{prefix}-{path}"


async def drain_once(
    kind: str, settings: Settings, run_dir: Path, ends: dict[int, int], trades: int
) -> tuple[float, list[tuple[bytes, bytes]], Counter[str]]:
    """One worker draining its input: (seconds, candles written, records per output topic)."""
    bootstrap = settings.kafka_bootstrap
    outputs = ("candles", "indicators", "signals")
    before = {name: await end_offsets(bootstrap, settings.topic(name)) for name in outputs}
    worker = WorkerProcess(kind, settings, run_dir, ends)
    worker.start()
    try:
        first_in = await worker.wait_for("first_in", START_TIMEOUT_SECONDS)
        drained = await worker.wait_for("drained", max(60.0, trades / SLOWEST_RATE))
        await wait_for_zero_lag(settings)
    finally:
        worker.stop()
    counts: Counter[str] = Counter()
    candles: list[tuple[bytes, bytes]] = []
    for name in outputs:
        records = await read_topic(bootstrap, settings.topic(name), before[name])
        counts[name] = len(records)
        if name == "candles":
            candles = records
    return drained - first_in, candles, counts


async def wait_for_zero_lag(settings: Settings) -> None:
    """Until the worker's committed offsets reach the end of its input (Faust commits
    every few seconds), so a drain the sensor saw is a drain Kafka agrees with."""
    deadline = time.monotonic() + LAG_TIMEOUT_SECONDS
    topics = [settings.topic("trades")]
    while (lag := await consumer_lag(settings, settings.processor_app_id, topics)) != 0:
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{settings.processor_app_id}: lag {lag} after the drain")
        await asyncio.sleep(0.5)


async def measure(options: BenchOptions, bootstrap: str, run_dir: Path) -> dict[str, Any]:
    prefix = run_id()
    options.say(f"generating {options.trades:,} trades over {options.symbols} symbols")
    trades = bench_trades(options.trades, options.seed, options.symbols, event_rate(options))
    try:
        ends: dict[str, dict[int, int]] = {}
        seconds: dict[str, list[float]] = {path: [] for path in PATHS}
        counts: dict[str, Counter[str]] = {}
        for repetition in range(options.repeats):
            candles: dict[str, list[tuple[bytes, bytes]]] = {}
            order = PATHS if repetition % 2 == 0 else PATHS[::-1]
            for path in order:
                topics = repetition_prefix(prefix, path, repetition)
                settings = bench_settings(
                    bootstrap, topics, f"{prefix}-{path}-{repetition}", run_dir / path
                )
                if path == "sigflow" or path not in ends:
                    options.say(f"writing the trades to {bootstrap} (topics {topics}.*)")
                    ends[path] = await fill_input(path, settings, trades)
                took, candles[path], counts[path] = await drain_once(
                    KINDS[path], settings, run_dir, ends[path], len(trades)
                )
                seconds[path].append(took)
            check_same_work(*(PathRun(0.0, [], candles[path], 0, 0) for path in PATHS))
            options.say(
                f"repetition {repetition + 1}/{options.repeats}: "
                + ", ".join(f"{p} {len(trades) / seconds[p][-1]:,.0f} trades/s" for p in PATHS)
            )
        return {
            "rates": {p: tuple(len(trades) / s for s in seconds[p]) for p in PATHS},
            "records": {p: sum(ends[p].values()) for p in PATHS},
            "counts": counts,
        }
    finally:
        await delete_run_topics(bootstrap, prefix)


def run(options: BenchOptions) -> BenchResult:
    """trades/s of a real sigflow processor worker through Kafka vs a naive Faust agent.

    Each repetition runs a fresh worker per path over the same pre-filled input; medians
    are reported.
    """
    with (
        bench_broker(options.say) as broker,
        tempfile.TemporaryDirectory(prefix="sigflow-bench-worker-") as run_dir,
    ):
        measured = asyncio.run(measure(options, broker.bootstrap, Path(run_dir)))
    counts = measured["counts"]["sigflow"]
    return BenchResult(
        bench=NAME,
        unit="trades/s",
        sigflow=Measurement(
            "processors.app worker: take_events micro-batches of "
            f"{DEFAULTS.ingest_batch_trades}-trade records → candles, indicators, signals",
            measured["rates"]["sigflow"],
        ),
        baseline=Measurement(BASELINE_NAME, measured["rates"]["baseline"]),
        baseline_name=BASELINE_NAME,
        title="Faust worker draining a trades topic on Kafka",
        parameters={
            "broker": broker.description,
            "trades": f"{options.trades:,}",
            "records": f"{measured['records']['sigflow']:,} vs {measured['records']['baseline']:,}",
            "keys": options.symbols,
            "event_rate": f"{event_rate(options):,.0f} trades/s",
            "candles": counts["candles"],
            "indicators": counts["indicators"],
            "signals": counts["signals"],
            "repeats": options.repeats,
            "seed": options.seed,
        },
    )
