"""`sigflow bench worker`, `latency`, `e2e` and `sink` run end to end on a tiny input.

They start real worker (and loader) processes on the test broker and warehouse and must
end with the agreed JSON line. No speed is asserted here: speed is measured by the
benchmarks themselves.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from rich.console import Console

from bench import BENCHMARKS, BenchOptions
from bench.report import BenchResult, print_report
from sigflow.settings import Settings
from sinks.warehouse import connect

pytestmark = pytest.mark.integration


def json_line(name: str, options: BenchOptions) -> dict[str, Any]:
    return printed_json(BENCHMARKS[name](options))


def printed_json(result: BenchResult) -> dict[str, Any]:
    """The JSON line that ends the printed report of `result`."""
    out = io.StringIO()
    print_report(result, Console(file=out, width=160))
    return dict(json.loads(out.getvalue().splitlines()[-1]))


def test_worker_bench_drains_both_workers_and_prints_the_json_line(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGFLOW_KAFKA_BOOTSTRAP", kafka_bootstrap)
    # Enough trades to close a few windows per key, so the candle comparison has work.
    line = json_line("worker", BenchOptions(trades=12_000, repeats=2, symbols=4))

    assert (line["bench"], line["unit"]) == ("worker", "trades/s")
    assert line["sigflow"] > 0 and line["baseline"] > 0
    assert line["ratio"] == pytest.approx(line["sigflow"] / line["baseline"], rel=1e-2)


def test_latency_bench_times_signals_and_the_relay_and_prints_the_json_line(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGFLOW_KAFKA_BOOTSTRAP", kafka_bootstrap)
    # Enough paced seconds that signals fire after the warm-up even on a loaded machine.
    line = json_line("latency", BenchOptions(trades=60_000, repeats=1, symbols=4))

    assert (line["bench"], line["unit"]) == ("latency", "trades/s")
    for field in ("p50_ms", "p99_ms", "candle_p50_ms", "candle_p99_ms", "baseline_p99_ms"):
        assert 0 < line[field] < 60_000, field
    assert line["p50_ms"] <= line["p99_ms"]


async def test_e2e_bench_loads_the_same_candles_both_ways_and_drops_its_databases(
    kafka_bootstrap: str, clickhouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGFLOW_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("SIGFLOW_CLICKHOUSE_URL", clickhouse_url)
    # The benchmark runs its own event loop, so it runs in a thread here.
    result = await asyncio.to_thread(
        BENCHMARKS["e2e"], BenchOptions(trades=30_000, repeats=1, symbols=4)
    )
    line = printed_json(result)

    assert (line["bench"], line["unit"]) == ("e2e", "trades/s")
    assert line["sigflow"] > 0 and line["baseline"] > 0
    # Both loaded the same candles (the benchmark refuses a ratio otherwise), and
    # sigflow's sink loaded the trades and indicators as well.
    rows = result.parameters
    assert int(str(rows["candle_rows"]).replace(",", "")) > 0
    assert "trades 30,000" in str(rows["sigflow_rows"])
    assert 0 < line["p50_ms"] <= line["p99_ms"] < 60_000  # trade → candle row, paced
    assert "indicators 0" not in str(rows["sigflow_rows"])
    assert await bench_databases(clickhouse_url) == []


async def test_sink_bench_runs_on_the_given_warehouse_and_drops_its_databases(
    clickhouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGFLOW_CLICKHOUSE_URL", clickhouse_url)
    options = BenchOptions(trades=20_000, repeats=2, batch_size=5_000)
    line = printed_json(await asyncio.to_thread(BENCHMARKS["sink"], options))

    assert (line["bench"], line["unit"]) == ("sink", "rows/s")
    assert line["sigflow"] > 0 and line["baseline"] > 0
    assert await bench_databases(clickhouse_url) == []


async def bench_databases(clickhouse_url: str) -> list[str]:
    """Databases a benchmark run left behind (runs name theirs `bench_<run id>_...`)."""
    client = await connect(Settings(clickhouse_url=clickhouse_url), database="")
    try:
        result = await client.query(
            "SELECT name FROM system.databases WHERE startsWith(name, 'bench_')"
        )
    finally:
        await client.close()
    return [name for (name,) in result.result_rows]
