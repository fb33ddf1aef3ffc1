"""The `processors` benchmark compares equal work and reports the agreed JSON line.

No speed is asserted here: speed is measured by `sigflow bench processors`.
"""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from bench import BENCHMARKS, BenchOptions
from bench.processors import candle_table, micro_batches, run_baseline, run_sigflow, trade_records
from bench.report import print_report

# Enough trades to close a few 1s and 1m windows of every symbol.
TINY = BenchOptions(trades=30_000, seed=3, repeats=1, batch_size=500)


def test_sigflow_and_baseline_build_the_same_candles() -> None:
    single = trade_records(TINY.trades, TINY.seed, TINY.symbols)
    batched = trade_records(TINY.trades, TINY.seed, TINY.symbols, trades_per_record=500)
    ours = run_sigflow(micro_batches(batched, 1))
    theirs = run_baseline(micro_batches(single, TINY.batch_size))

    assert len(batched) < len(single) / 100  # sigflow really reads arrays of trades

    assert ours.trades == theirs.trades == TINY.trades
    ours_by_window, theirs_by_window = candle_table(ours.candles), candle_table(theirs.candles)
    assert len(ours_by_window) >= 16
    assert {interval for _, interval, _ in ours_by_window} == {"1s", "1m"}  # 300 s of trades
    assert ours_by_window.keys() == theirs_by_window.keys()
    for window, candle in ours_by_window.items():
        other = theirs_by_window[window]
        for name in ("open", "high", "low", "close", "trade_count"):
            assert candle[name] == other[name], (window, name)
        for name in ("volume", "quote_volume", "buy_volume"):
            assert candle[name] == pytest.approx(other[name], rel=1e-12), (window, name)


def test_report_ends_with_the_json_line_every_benchmark_prints() -> None:
    result = BENCHMARKS["processors"](TINY)
    out = io.StringIO()
    print_report(result, Console(file=out, width=120))

    line = json.loads(out.getvalue().splitlines()[-1])
    assert set(line) == {
        "bench",
        "unit",
        "sigflow",
        "baseline",
        "baseline_name",
        "ratio",
        "p50_ms",
        "p99_ms",
    }
    assert (line["bench"], line["unit"]) == ("processors", "trades/s")
    assert line["ratio"] == pytest.approx(line["sigflow"] / line["baseline"], rel=1e-2)
