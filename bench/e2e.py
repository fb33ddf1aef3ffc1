"""Benchmark `e2e`: trades in Kafka → candles queryable in ClickHouse, the whole pipeline.

Per path and repetition, on fresh topics and a fresh database:
the loader starts first and the benchmark waits until its consumer group is stable;
then the worker starts on the pre-filled `trades` topic.

- sigflow: `sigflow sink` (the real role, every output table) and the processor app (as
  `bench worker` runs it), reading batched `trades` records as ingest writes them;
- baseline: the naive per-event Faust agent of `bench worker` and `bench.naive_loader`,
  a hand-written loader that inserts each Kafka fetch of candles with clickhouse-connect.

Time runs from the first record the worker got (its `DrainSensor`) to the newest candle
row's `inserted_at` (the server's clock, on the same host), read once the worker has
drained its input and the loader has committed all of its topics. Both paths must have
put the same candles in ClickHouse (read with `FINAL`, as an analyst would), or no ratio
is reported. sigflow's sink also loads trades, indicators and signals (the report says
how many rows); the baseline loads only candles.

Then freshness, sigflow's p50/p99 of the JSON line: its worker and sink under `bench
latency`'s steady 10,000 trades/s (1m candles, on the now warm broker), each window's
latency from its closing trade's hand-over to its candle row's `inserted_at`. The sink
flushes every `SIGFLOW_SINK_FLUSH_SECONDS` (1 s), so that is most of it. The naive
stack cannot keep that pace, so it has no latency to compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench import latency
from bench.kafka_run import (
    DEFAULTS,
    WorkerProcess,
    bench_broker,
    bench_settings,
    delete_run_topics,
    run_id,
)
from bench.processors import bench_trades, event_rate
from bench.report import BenchmarkError, BenchOptions, BenchResult, Measurement
from bench.warehouse_run import Warehouse, bench_warehouse, database_for, drop_databases
from bench.worker import (
    KINDS,
    PATHS,
    SLOWEST_RATE,
    START_TIMEOUT_SECONDS,
    fill_input,
    wait_for_zero_lag,
)
from processors.candles import interval_ms
from sigflow.kafka import consumer_lag
from sigflow.roles import migrate
from sigflow.settings import Settings, settings_env
from sigflow.stack.process import BackgroundProcess
from sinks.clickhouse import ROUTES
from sinks.warehouse import connect

NAME = "e2e"
BASELINE_NAME = "naive per-event Faust agent + hand-written Kafka → ClickHouse loader"
LOADERS = {"sigflow": ("-m", "sigflow", "sink"), "baseline": ("-m", "bench.naive_loader")}
GROUP_TIMEOUT_SECONDS = 60.0
LOAD_TIMEOUT_SECONDS = 60.0
COUNTED_TABLES = ("trades", "candles", "indicators", "signals")
FRESHNESS_TRADES = 300_000  # 30 s at `bench latency`'s pace
CANDLE_ROWS = (
    "SELECT exchange, symbol, interval, toUnixTimestamp64Milli(open_time), "
    "open, high, low, close, trade_count, volume "
    "FROM candles FINAL ORDER BY exchange, symbol, interval, open_time"
)


@dataclass(frozen=True)
class PathPass:
    """One timed pass: seconds from first record in to last candle queryable, the candle
    rows it left (`CANDLE_ROWS`) and the row count of each of `COUNTED_TABLES`."""

    seconds: float
    candles: list[tuple[Any, ...]]
    rows: dict[str, int]


def loader_topics(path: str, settings: Settings) -> list[str]:
    """The topics a path's loader consumes (sigflow's sink: every routed topic)."""
    if path == "baseline":
        return [settings.topic("candles")]
    return sorted({settings.topic(route.topic) for route in ROUTES})


async def until(
    done: Callable[[], Awaitable[bool]], loader: BackgroundProcess, what: str, timeout: float
) -> None:
    """Poll `done()` until it holds; fail with the loader's log if the loader exits or
    `timeout` seconds pass first (`what` says what never happened)."""
    deadline = time.monotonic() + timeout
    while not await done():
        if not loader.is_running():
            raise BenchmarkError(f"the loader exited:\n{loader.log_tail(40)}")
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{what} after {timeout:g} s:\n{loader.log_tail(40)}")
        await asyncio.sleep(0.2)


async def wait_until_consuming(settings: Settings, loader: BackgroundProcess) -> None:
    """Until the loader's consumer group is stable: it has joined and owns its partitions,
    so its start-up is not part of the timed pass."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()

    async def stable() -> bool:
        try:
            (response,) = await admin.describe_consumer_groups([settings.sink_group_id])
        except KafkaError:
            return False  # the group's coordinator is not there yet
        groups = response.to_object()["groups"]
        return bool(groups) and groups[0]["state"] == "Stable"

    try:
        await until(stable, loader, "the loader's group is not stable", GROUP_TIMEOUT_SECONDS)
    finally:
        await admin.close()


async def wait_until_loaded(path: str, settings: Settings, loader: BackgroundProcess) -> None:
    """Until the loader has committed every record of its topics (so all of it is inserted)."""
    topics = loader_topics(path, settings)

    async def caught_up() -> bool:
        return await consumer_lag(settings, settings.sink_group_id, topics) == 0

    await until(
        caught_up, loader, "the loader has not caught up with the worker", LOAD_TIMEOUT_SECONDS
    )


async def read_results(settings: Settings) -> tuple[float, list[tuple[Any, ...]], dict[str, int]]:
    """(the newest candle's insert time in epoch seconds, the candle rows, rows per table)."""
    client = await connect(settings)
    try:
        newest = await client.query("SELECT toUnixTimestamp64Milli(max(inserted_at)) FROM candles")
        candles = await client.query(CANDLE_ROWS)
        rows: dict[str, int] = {}
        for table in COUNTED_TABLES:
            rows[table] = (await client.query(f"SELECT count() FROM {table}")).result_rows[0][0]
    finally:
        await client.close()
    candle_rows = [tuple(row) for row in candles.result_rows]
    return float(newest.result_rows[0][0]) / 1000.0, candle_rows, rows


@contextlib.asynccontextmanager
async def running_loader(
    path: str, settings: Settings, run_dir: Path
) -> AsyncIterator[BackgroundProcess]:
    """The path's loader on a migrated database, consuming (its group stable) until the
    block ends; then it is stopped."""
    await migrate(settings)
    loader = BackgroundProcess(
        f"{settings.processor_app_id}-loader",
        run_dir,
        [sys.executable, *LOADERS[path]],
        env=settings_env(settings),
    )
    loader.start()
    try:
        await wait_until_consuming(settings, loader)
        yield loader
    finally:
        loader.stop(timeout=20)


async def timed_pass(
    path: str, settings: Settings, run_dir: Path, ends: dict[int, int], trades: int
) -> PathPass:
    """Start the path's loader, then its worker on the filled input, and time them."""
    async with running_loader(path, settings, run_dir) as loader:
        worker = WorkerProcess(KINDS[path], settings, run_dir, ends)
        worker.start()
        try:
            first_in = await worker.wait_for("first_in", START_TIMEOUT_SECONDS)
            await worker.wait_for("drained", max(60.0, trades / SLOWEST_RATE))
            await wait_for_zero_lag(settings)
        finally:
            worker.stop()
        await wait_until_loaded(path, settings, loader)
    newest, candles, rows = await read_results(settings)
    return PathPass(newest - first_in, candles, rows)


async def freshness_pass(
    options: BenchOptions, bootstrap: str, warehouse: Warehouse, run_dir: Path, prefix: str
) -> list[float]:
    """Seconds from each window's closing trade to its candle row in ClickHouse, with
    sigflow's worker and sink under `bench latency`'s steady pace, for the windows closed
    after its warm-up."""
    count = min(options.trades, FRESHNESS_TRADES)
    trades = bench_trades(count, options.seed, options.symbols, latency.EVENT_TRADES_PER_SECOND)
    width = interval_ms(latency.INTERVAL)
    closing = latency.closing_trades(trades, width, DEFAULTS.allowed_lateness_ms)
    name = f"{prefix}-fresh"
    settings = bench_settings(
        bootstrap,
        name,
        name,
        run_dir / "fresh",
        **warehouse.settings,
        clickhouse_database=database_for(prefix, "fresh"),
        sink_group_id=f"{name}-loader",
        candle_intervals=[latency.INTERVAL],
    )
    async with running_loader("sigflow", settings, run_dir) as loader:
        handed, _, since, _ = await latency.timed_pass(
            "sigflow",
            settings,
            run_dir,
            trades,
            [settings.topic("candles")],
            len(closing),
            options.say,
        )
        await wait_until_loaded("sigflow", settings, loader)
    client = await connect(settings)
    try:
        rows = await client.query(
            "SELECT exchange, symbol, toUnixTimestamp64Milli(open_time), "
            "toUnixTimestamp64Milli(inserted_at) FROM candles"
        )
    finally:
        await client.close()
    inserted = (
        (f"{exchange}:{symbol}".encode(), open_time, inserted_ms / 1000.0)
        for exchange, symbol, open_time, inserted_ms in rows.result_rows
    )
    ages = latency.window_latencies(inserted, closing, handed, since, "ClickHouse candles")
    if not ages:
        raise BenchmarkError("freshness: no candle closed after the warm-up (more --trades?)")
    return ages


def check_same_candles(ours: list[tuple[Any, ...]], theirs: list[tuple[Any, ...]]) -> None:
    """Refuse a ratio unless both paths left the same candles: exact OHLC and trade count,
    volume to 1e-9 (sums in another order)."""
    if not ours or len(ours) != len(theirs):
        raise BenchmarkError(f"candle rows differ: {len(ours)} vs {len(theirs)}")
    for mine, other in zip(ours, theirs, strict=True):
        if mine[:-1] != other[:-1] or not math.isclose(mine[-1], other[-1], rel_tol=1e-9):
            raise BenchmarkError(f"candle rows differ: sigflow {mine} vs baseline {other}")


async def measure(
    options: BenchOptions, bootstrap: str, warehouse: Warehouse, run_dir: Path
) -> dict[str, Any]:
    prefix = run_id()
    options.say(f"generating {options.trades:,} trades over {options.symbols} symbols")
    trades = bench_trades(options.trades, options.seed, options.symbols, event_rate(options))
    run_settings = bench_settings(bootstrap, prefix, prefix, run_dir, **warehouse.settings)
    seconds: dict[str, list[float]] = {path: [] for path in PATHS}
    rows: dict[str, dict[str, int]] = {}
    try:
        for repetition in range(options.repeats):
            candles: dict[str, list[tuple[Any, ...]]] = {}
            for path in PATHS if repetition % 2 == 0 else PATHS[::-1]:
                # Fresh topics for both paths: a loader reads its topics from the start.
                name = f"{prefix}-{path}-{repetition}"
                settings = bench_settings(
                    bootstrap,
                    name,
                    name,
                    run_dir / path,
                    **warehouse.settings,
                    clickhouse_database=database_for(prefix, f"{path}_{repetition}"),
                    sink_group_id=f"{name}-loader",
                )
                options.say(f"writing the trades to {bootstrap} (topics {name}.*)")
                ends = await fill_input(path, settings, trades)
                result = await timed_pass(path, settings, run_dir, ends, len(trades))
                seconds[path].append(result.seconds)
                candles[path], rows[path] = result.candles, result.rows
            check_same_candles(candles["sigflow"], candles["baseline"])
            options.say(
                f"repetition {repetition + 1}/{options.repeats}: "
                + ", ".join(f"{p} {len(trades) / seconds[p][-1]:,.0f} trades/s" for p in PATHS)
            )
        options.say(f"freshness: sigflow under a steady {latency.RATE:,.0f} trades/s")
        freshness = await freshness_pass(options, bootstrap, warehouse, run_dir, prefix)
    finally:
        await delete_run_topics(bootstrap, prefix)
        await drop_databases(run_settings, prefix)
    return {
        "rates": {path: tuple(len(trades) / s for s in seconds[path]) for path in PATHS},
        "rows": rows,
        "freshness": freshness,
    }


def run(options: BenchOptions) -> BenchResult:
    """trades/s from a trades topic to candles in ClickHouse vs a naive agent and loader.

    sigflow's processor and sink against the naive Faust agent and a hand-written loader,
    each repetition on fresh topics and a fresh database; medians are reported. Then
    sigflow's freshness (p50/p99 trade → candle row) under a steady pace.
    """
    with (
        bench_broker(options.say) as broker,
        bench_warehouse(options.say) as warehouse,
        tempfile.TemporaryDirectory(prefix="sigflow-bench-e2e-") as run_dir,
    ):
        measured = asyncio.run(measure(options, broker.bootstrap, warehouse, Path(run_dir)))
    ours, theirs = measured["rows"]["sigflow"], measured["rows"]["baseline"]
    return BenchResult(
        bench=NAME,
        unit="trades/s",
        sigflow=Measurement(
            "sigflow process + sigflow sink: batched trades → candles, indicators, signals "
            "→ every table",
            measured["rates"]["sigflow"],
            tuple(measured["freshness"]),
        ),
        baseline=Measurement(BASELINE_NAME, measured["rates"]["baseline"]),
        baseline_name=BASELINE_NAME,
        title="trades in Kafka → candles queryable in ClickHouse",
        latency_label="trade → row",
        parameters={
            "broker": broker.description,
            "warehouse": warehouse.description,
            "trades": f"{options.trades:,}",
            "keys": options.symbols,
            "event_rate": f"{event_rate(options):,.0f} trades/s",
            "candle_rows": f"{ours['candles']:,}",
            "sigflow_rows": ", ".join(f"{t} {n:,}" for t, n in ours.items()),
            "baseline_rows": ", ".join(f"{t} {n:,}" for t, n in theirs.items()),
            "repeats": options.repeats,
            "seed": options.seed,
            "freshness": f"{len(measured['freshness']):,} 1m candles at "
            f"{latency.RATE:,.0f} trades/s, sink flush {DEFAULTS.sink_flush_seconds:g} s",
        },
    )
