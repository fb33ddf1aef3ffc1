"""`sigflow bench worker` and `sigflow bench latency` run end to end on a tiny input.

They start real worker processes on the test broker and must end with the agreed JSON
line. No speed is asserted here: speed is measured by the benchmarks themselves.
"""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from bench import BENCHMARKS, BenchOptions
from bench.report import print_report

pytestmark = pytest.mark.integration


def json_line(name: str, options: BenchOptions) -> dict[str, object]:
    out = io.StringIO()
    print_report(BENCHMARKS[name](options), Console(file=out, width=120))
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
