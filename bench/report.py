"""What every benchmark takes and returns, and the one way its result is printed.

A benchmark measures sigflow and a baseline side by side in the same run (machines are
noisy, numbers from different runs do not compare) and returns a `BenchResult`.
`print_report()` prints a readable table and then exactly one JSON line, the last line
of the output, for scripts and CI:

    {"bench": NAME, "unit": "trades/s", "sigflow": X, "baseline": Y,
     "baseline_name": "...", "ratio": X/Y, "p50_ms": ..., "p99_ms": ...}

`p50_ms`/`p99_ms` (sigflow's batch latency) appear only where latency applies. Speed is
measured here, never asserted in tests.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from sigflow.exceptions import SigflowError


class BenchmarkError(SigflowError):
    """A benchmark that cannot give a fair number, e.g. its contenders did different work."""


@dataclass(frozen=True)
class BenchOptions:
    """Knobs every benchmark understands (each uses those that apply to it)."""

    trades: int = 500_000
    seed: int = 0
    repeats: int = 5
    batch_size: int = 2_000
    symbols: int = 8
    # Trades per second of event time in the synthetic stream (None: the benchmark's
    # own default). It sets how many trades make a candle, so how many candles, indicator
    # records and signals each trade costs.
    event_rate: float | None = None
    progress: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        """Report progress of a long run, if anyone listens."""
        if self.progress is not None:
            self.progress(message)


@dataclass(frozen=True)
class Measurement:
    """One contender: its rate in each timed repetition and, if measured, batch latencies."""

    label: str  # what ran, for a person: "CandleStream.process on 2,000-record batches"
    rates: tuple[float, ...]
    batch_seconds: tuple[float, ...] = ()
    # Latency quantiles an external load generator reported (quantile -> ms, median over
    # repetitions), for benchmarks that cannot see individual samples (e.g. wrk).
    quantiles_ms: dict[float, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """The median rate over repetitions: the number that is reported."""
        return statistics.median(self.rates)

    def latency_ms(self, quantile: float) -> float | None:
        """Nearest-rank batch latency quantile in ms (None when latency was not measured)."""
        if quantile in self.quantiles_ms:
            return self.quantiles_ms[quantile]
        if not self.batch_seconds:
            return None
        ordered = sorted(self.batch_seconds)
        rank = max(1, math.ceil(quantile * len(ordered)))
        return ordered[rank - 1] * 1000.0


@dataclass(frozen=True)
class BenchResult:
    """Both contenders of one benchmark run, measured on the same input."""

    bench: str
    unit: str
    sigflow: Measurement
    baseline: Measurement
    baseline_name: str
    title: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    # Optional rows of a second table printed before the JSON line (e.g. per-kind scores).
    breakdown: tuple[dict[str, str], ...] = ()
    latency_label: str = "batch"  # what `Measurement.batch_seconds` times, for the table
    extra: dict[str, Any] = field(default_factory=dict)  # more fields for the JSON line

    @property
    def ratio(self) -> float:
        """sigflow's rate over the baseline's (higher is better for sigflow)."""
        return self.sigflow.rate / self.baseline.rate

    def summary(self) -> dict[str, Any]:
        """The fields of the final JSON line."""
        line: dict[str, Any] = {
            "bench": self.bench,
            "unit": self.unit,
            "sigflow": _rounded(self.sigflow.rate),
            "baseline": _rounded(self.baseline.rate),
            "baseline_name": self.baseline_name,
            "ratio": round(self.ratio, 3),
        }
        p50, p99 = self.sigflow.latency_ms(0.50), self.sigflow.latency_ms(0.99)
        if p50 is not None and p99 is not None:
            line["p50_ms"] = round(p50, 3)
            line["p99_ms"] = round(p99, 3)
        return {**line, **self.extra}


def _rounded(value: float) -> float:
    """One decimal for rates, four for scores below 100 (e.g. precision 0.015)."""
    return round(value, 1) if abs(value) >= 100 else round(value, 4)


def _number(value: float) -> str:
    """Rates as whole numbers, scores below 100 (precision, recall) with three decimals."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def print_report(result: BenchResult, console: Console | None = None) -> None:
    """The readable table, then the JSON line as the very last line of output."""
    console = console or Console()
    caption = "  ".join(f"{name}={value}" for name, value in result.parameters.items())
    table = Table(
        title=f"bench {result.bench}" + (f": {result.title}" if result.title else ""),
        caption=caption or None,
    )
    table.add_column("path", no_wrap=True)
    table.add_column(f"{result.unit} median", justify="right", no_wrap=True)
    table.add_column("min-max of runs", justify="right", no_wrap=True)
    table.add_column(f"{result.latency_label} p50 ms", justify="right", no_wrap=True)
    table.add_column(f"{result.latency_label} p99 ms", justify="right", no_wrap=True)
    for name, who in (("sigflow", result.sigflow), ("baseline", result.baseline)):
        table.add_row(
            name,
            _number(who.rate),
            f"{_number(min(who.rates))}-{_number(max(who.rates))}",
            _ms(who.latency_ms(0.50)),
            _ms(who.latency_ms(0.99)),
        )
    console.print(table)
    if result.breakdown:
        details = Table(title=f"bench {result.bench}: breakdown")
        for column in result.breakdown[0]:
            details.add_column(column, no_wrap=True)
        for row in result.breakdown:
            details.add_row(*row.values())
        console.print(details)
    console.print(f"sigflow:  {result.sigflow.label}", highlight=False)
    console.print(f"baseline: {result.baseline.label}", highlight=False)
    console.print(
        f"ratio sigflow / baseline: [bold]{result.ratio:.2f}x[/bold]"
        f" (medians of {len(result.sigflow.rates)} repetitions)",
        highlight=False,
    )
    # Plain write, not console.print: rich would wrap or highlight the machine line.
    console.file.write(orjson.dumps(result.summary()).decode() + "\n")
    console.file.flush()
