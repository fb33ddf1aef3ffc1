"""`sigflow bench sink`: rows/s into ClickHouse through the sink vs a plain bulk insert.

Both write the same decoded trades into their own copy of the `trades` table, in
databases of the run on `SIGFLOW_CLICKHOUSE_URL` or else the embedded engine, which the
benchmark starts on a free port (`bench.warehouse_run`). sigflow's path is
`ClickHouseSink.flush()` over per-partition batches of `--batch-size` rows (columnar
insert with a dedup token, metrics); the baseline is clickhouse-connect's
`insert(column_oriented=True)` of the same rows in batches of the same size, the way a
hand-written loader would do it. Repetitions alternate who goes first, each pass into
fresh tables.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.kafka_run import run_id
from bench.report import BenchOptions, BenchResult, Measurement
from bench.warehouse_run import bench_warehouse, database_for, drop_databases
from ingest.synthetic import synthetic_trades
from schemas.events import Trade
from sigflow.settings import Settings
from sinks.clickhouse import ROUTES, ClickHouseSink
from sinks.migrations import apply_migrations
from sinks.warehouse import connect

NAME = "sink"
BASELINE_NAME = "clickhouse-connect insert(column_oriented=True), same batches"
PARTITIONS = 3
FETCH_RECORDS = 500  # aiokafka's default max_records per partition fetch
START_TS = 1_767_225_600_000


def _trades(count: int, seed: int) -> list[Any]:
    symbols = {f"S{i}-USDT": 10.0 + i for i in range(16)}
    return list(
        synthetic_trades(
            symbols=symbols, count=count, trades_per_second=1_000.0, seed=seed, start_ts=START_TS
        )
    )


async def _sigflow_pass(settings: Settings, database: str, trades: list[Any], batch: int) -> float:
    client = await connect(settings, database="")
    routes = {route.topic: route for route in ROUTES}
    sink = ClickHouseSink(client, database, routes, max_rows=batch, max_age_seconds=3600)
    started = time.perf_counter()
    # As the runner feeds it: one consumer fetch (<= 500 records) per partition at a time.
    for offset in range(0, len(trades), FETCH_RECORDS):
        chunk = trades[offset : offset + FETCH_RECORDS]
        partition = (offset // FETCH_RECORDS) % PARTITIONS
        sink.add("trades", partition, offset, offset + len(chunk) - 1, chunk)
        if sink.due():
            await sink.flush()
    await sink.flush()
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


async def _baseline_pass(settings: Settings, database: str, trades: list[Any], batch: int) -> float:
    client = await connect(settings, database="")
    columns = list(Trade.model_fields)
    started = time.perf_counter()
    for start in range(0, len(trades), batch):
        chunk = trades[start : start + batch]
        data = [[getattr(trade, name) for trade in chunk] for name in columns]
        await client.insert(f"{database}.trades", data, column_names=columns, column_oriented=True)
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


async def _measure(settings: Settings, options: BenchOptions) -> tuple[list[float], list[float]]:
    options.say(f"generating {options.trades:,} trades")
    trades = _trades(options.trades, options.seed)
    prefix = run_id()
    passes = {"sigflow": _sigflow_pass, "baseline": _baseline_pass}
    rates: dict[str, list[float]] = {"sigflow": [], "baseline": []}
    client = await connect(settings, database="")
    try:
        for repetition in range(options.repeats):
            order = ["sigflow", "baseline"] if repetition % 2 == 0 else ["baseline", "sigflow"]
            for who in order:
                # A fresh table every pass: the sink's deduplication token is the same for
                # the same input offsets, so a second pass into the same table would have
                # its inserts dropped by the warehouse as retries, and look fast.
                database = database_for(prefix, f"{who}_{repetition}")
                await apply_migrations(client, database)
                seconds = await passes[who](settings, database, trades, options.batch_size)
                rates[who].append(len(trades) / seconds)
            options.say(
                f"repetition {repetition + 1}/{options.repeats}: "
                + ", ".join(f"{who} {rates[who][-1]:,.0f} rows/s" for who in rates)
            )
    finally:
        await client.close()
        await drop_databases(settings, prefix)
    return rates["sigflow"], rates["baseline"]


def run(options: BenchOptions) -> BenchResult:
    """Insert throughput of the sink against a plain bulk insert, fresh tables each pass."""
    with bench_warehouse(options.say) as warehouse:
        settings = Settings.model_construct(**{**Settings().model_dump(), **warehouse.settings})
        sigflow_rates, baseline_rates = asyncio.run(_measure(settings, options))
    return BenchResult(
        bench=NAME,
        unit="rows/s",
        sigflow=Measurement(
            "ClickHouseSink: 500-record adds, one insert per flush", tuple(sigflow_rates)
        ),
        baseline=Measurement(BASELINE_NAME, tuple(baseline_rates)),
        baseline_name=BASELINE_NAME,
        title="trades into ClickHouse",
        parameters={
            "warehouse": warehouse.description,
            "rows": f"{options.trades:,}",
            "batch": f"{options.batch_size:,}",
            "repeats": options.repeats,
        },
    )
