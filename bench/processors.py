"""Benchmark `processors`: the candle hot path against a naive per-record agent.

sigflow: `CandleStream.process()` on micro-batches of `trades` records as
`EventProducer` writes them (each a JSON array of up to `ingest_batch_trades` trades of
one key), with the state in a dict as the Faust table keeps it. Baseline: what a
straightforward Faust agent does per event, on one trade object per record:
`json.loads`, pydantic `Trade.model_validate`, and a Python dict update of the OHLCV of
(key, window), with the same watermark rules so both paths emit the same candles. Both
build every default interval (`Settings.candle_intervals`): the baseline folds each
trade into each interval, sigflow folds it once into the finest and composes the rest.
Both get micro-batches of the same trades, in the same process, alternating which goes
first. Neither talks to Kafka: this is the CPU cost per trade; `sigflow bench worker`
measures real workers on Kafka.
"""

from __future__ import annotations

import gc
import json
import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from bench.report import BenchmarkError, BenchOptions, BenchResult, Measurement
from ingest.synthetic import synthetic_trades
from processors.candle_stream import CandleStream, RawRecord
from processors.candles import interval_ms
from schemas.codec import codec_for
from schemas.events import Candle, Trade
from sigflow.settings import Settings

NAME = "processors"
BASELINE_NAME = (
    "naive per-record agent: json.loads + Trade.model_validate + dict OHLCV per interval"
)
# Settings defaults, not the environment: a benchmark must not change with SIGFLOW_*.
DEFAULTS = Settings.model_construct()
INTERVALS = tuple(DEFAULTS.candle_intervals)
EXCHANGE = "synthetic"
MAJORS = {
    "BTC-USDT": 60_000.0,
    "ETH-USDT": 3_000.0,
    "SOL-USDT": 150.0,
    "BNB-USDT": 600.0,
    "XRP-USDT": 0.6,
    "ADA-USDT": 0.45,
    "DOGE-USDT": 0.15,
    "LINK-USDT": 15.0,
}


def symbol_prices(count: int) -> dict[str, float]:
    """`count` symbols with start prices: the majors first, then generated alts."""
    alts = {f"ALT{i}-USDT": 1.0 + i for i in range(max(0, count - len(MAJORS)))}
    return dict(list({**MAJORS, **alts}.items())[:count])


# All symbols together: ~750 trades per symbol-minute, so a 2,000-trade batch holds
# ~250 trades of each key and a key's minute closes every ~3 batches.
TRADES_PER_SECOND = 100.0
START_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# Untimed batches run by each path before the first repetition (imports, caches).
WARMUP_BATCHES = 20


def event_rate(options: BenchOptions) -> float:
    """The synthetic stream's trades per second of event time (`--event-rate`)."""
    return options.event_rate or TRADES_PER_SECOND


@dataclass
class PathRun:
    """One timed pass of one path over every batch."""

    seconds: float
    batch_seconds: list[float]
    candles: list[tuple[bytes, bytes]]
    trades: int
    late: int


def bench_trades(
    count: int, seed: int, symbols: int, trades_per_second: float = TRADES_PER_SECOND
) -> list[Any]:
    """The benchmarks' synthetic trades (`Trade` wire structs), in exchange order."""
    return list(
        synthetic_trades(
            exchange=EXCHANGE,
            symbols=symbol_prices(symbols),
            count=count,
            trades_per_second=trades_per_second,
            seed=seed,
            start_ts=START_TS,
        )
    )


def trade_records(
    count: int,
    seed: int,
    symbols: int,
    trades_per_record: int = 1,
    trades_per_second: float = TRADES_PER_SECOND,
) -> list[RawRecord]:
    """Synthetic trades as the `trades` topic holds them, keyed `exchange:symbol`.

    `trades_per_record` > 1 batches them as `EventProducer` does when trades come faster
    than its linger: a key's record is written once it holds that many trades, and the
    leftovers at the end. The partition is a stable hash of the key (Kafka's murmur2 is
    not needed: placement only has to keep each key in one partition); offsets count up
    per partition.
    """
    codec = codec_for(Trade)
    topic, partitions = DEFAULTS.topic("trades"), DEFAULTS.topic_partitions
    next_offset = [0] * partitions
    records = []

    def write(key: bytes, trades: list[Any]) -> None:
        partition = zlib.crc32(key) % partitions
        value = codec.encode(trades[0]) if trades_per_record == 1 else codec.encode_batch(trades)
        records.append(RawRecord(topic, partition, next_offset[partition], key, value))
        next_offset[partition] += 1

    pending: dict[bytes, list[Any]] = {}
    for trade in bench_trades(count, seed, symbols, trades_per_second):
        key = f"{trade.exchange}:{trade.symbol}".encode()
        batch = pending.setdefault(key, [])
        batch.append(trade)
        if len(batch) >= trades_per_record:
            write(key, pending.pop(key))
    for key, batch in pending.items():
        write(key, batch)
    return records


def micro_batches(records: list[RawRecord], size: int) -> list[list[RawRecord]]:
    """Consecutive batches of `size` records, as `take_events` hands them to the agent."""
    return [records[start : start + size] for start in range(0, len(records), size)]


def run_sigflow(batches: list[list[RawRecord]]) -> PathRun:
    """sigflow's path: `CandleStream.process` per batch, state in a dict like the table."""
    stream = CandleStream(INTERVALS, DEFAULTS.allowed_lateness_ms)
    state: dict[bytes, dict[str, Any]] = {}
    run = PathRun(0.0, [], [], 0, 0)
    started = time.perf_counter()
    for batch in batches:
        batch_started = time.perf_counter()
        result = stream.process(batch, state.get)
        state.update(result.states)
        run.batch_seconds.append(time.perf_counter() - batch_started)
        run.candles.extend(result.candles)
        run.trades += result.trades
        run.late += result.late
    run.seconds = time.perf_counter() - started
    return run


@dataclass
class NaiveKeyState:
    """The baseline's per-key table entry: last offset, watermark and open windows."""

    offset: int = -1
    max_ts: int = -1
    windows: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)


class NaiveCandleAgent:
    """Candles one event at a time, as a straightforward Faust agent would build them.

    Semantics match `CandleBuilder`: open/close follow event time (ties: arrival order),
    a trade is late (and counts nowhere) when its finest window ended at or before the
    watermark bound seen before it, and a window of any interval closes once its end is
    at or before `max_ts - lateness` floored to the finest interval.
    """

    def __init__(self, intervals: tuple[str, ...], lateness_ms: int) -> None:
        self.widths = {name: interval_ms(name) for name in intervals}
        self.finest = min(self.widths.values())
        self.lateness = lateness_ms
        self.state: dict[bytes, NaiveKeyState] = {}
        self.trades = 0
        self.late = 0

    def process(self, batch: list[RawRecord]) -> list[tuple[bytes, bytes]]:
        candles: list[tuple[bytes, bytes]] = []
        for record in batch:
            self.on_record(record, candles)
        return candles

    def on_record(self, record: RawRecord, candles: list[tuple[bytes, bytes]]) -> None:
        trade = Trade.model_validate(json.loads(record.value or b""))
        key = record.key or b""
        if key != f"{trade.exchange}:{trade.symbol}".encode():
            raise BenchmarkError(f"record key {key!r} does not match its trade")
        entry = self.state.get(key)
        if entry is None:
            entry = self.state[key] = NaiveKeyState(windows={name: {} for name in self.widths})
        if record.offset <= entry.offset:
            return
        entry.offset = record.offset
        ts, finest = trade.ts, self.finest
        if entry.max_ts >= 0 and ts - ts % finest + finest <= self._closed_bound(entry.max_ts):
            self.late += 1
            return
        self.trades += 1
        for name, width in self.widths.items():
            self._fold(entry.windows[name], ts - ts % width, trade)
        if ts > entry.max_ts:
            entry.max_ts = ts
            bound = self._closed_bound(ts)
            for name, width in self.widths.items():
                windows = entry.windows[name]
                for closed in sorted(s for s in windows if s + width <= bound):
                    candles.append((key, self._candle(trade, name, closed, windows.pop(closed))))

    @staticmethod
    def _fold(windows: dict[int, dict[str, Any]], start: int, trade: Trade) -> None:
        ts, price, size = trade.ts, trade.price, trade.size
        window = windows.get(start)
        if window is None:
            windows[start] = {
                "open": price,
                "high": price,
                "low": price,
                "close": price,
                "first_ts": ts,
                "last_ts": ts,
                "volume": 0.0 + size,
                "quote_volume": 0.0 + price * size,
                "buy_volume": size if trade.side == "buy" else 0.0,
                "trade_count": 1,
            }
            return
        if ts < window["first_ts"]:
            window["open"], window["first_ts"] = price, ts
        if ts >= window["last_ts"]:
            window["close"], window["last_ts"] = price, ts
        window["high"] = max(window["high"], price)
        window["low"] = min(window["low"], price)
        window["volume"] += size
        window["quote_volume"] += price * size
        if trade.side == "buy":
            window["buy_volume"] += size
        window["trade_count"] += 1

    def _closed_bound(self, max_ts: int) -> int:
        watermark = max_ts - self.lateness
        return watermark - watermark % self.finest

    def _candle(self, trade: Trade, interval: str, open_time: int, window: dict[str, Any]) -> bytes:
        return (
            Candle(
                exchange=trade.exchange,
                symbol=trade.symbol,
                interval=interval,
                open_time=open_time,
                close_time=open_time + self.widths[interval],
                open=window["open"],
                high=window["high"],
                low=window["low"],
                close=window["close"],
                volume=window["volume"],
                quote_volume=window["quote_volume"],
                vwap=window["quote_volume"] / window["volume"],
                trade_count=window["trade_count"],
                buy_volume=window["buy_volume"],
                sell_volume=window["volume"] - window["buy_volume"],
                final=True,
            )
            .model_dump_json()
            .encode()
        )


def run_baseline(batches: list[list[RawRecord]]) -> PathRun:
    """The naive path over the same batches, timed the same way."""
    agent = NaiveCandleAgent(INTERVALS, DEFAULTS.allowed_lateness_ms)
    run = PathRun(0.0, [], [], 0, 0)
    started = time.perf_counter()
    for batch in batches:
        batch_started = time.perf_counter()
        candles = agent.process(batch)
        run.batch_seconds.append(time.perf_counter() - batch_started)
        run.candles.extend(candles)
    run.seconds = time.perf_counter() - started
    run.trades, run.late = agent.trades, agent.late
    return run


def candle_table(
    candles: list[tuple[bytes, bytes]],
) -> dict[tuple[bytes, str, int], dict[str, Any]]:
    """Emitted candles by (key, interval, open_time), decoded, refusing duplicates."""
    table: dict[tuple[bytes, str, int], dict[str, Any]] = {}
    for key, value in candles:
        candle = json.loads(value)
        where = (key, candle["interval"], candle["open_time"])
        if table.setdefault(where, candle) is not candle:
            raise BenchmarkError(f"{where} was emitted twice")
    return table


def check_same_work(sigflow: PathRun, baseline: PathRun) -> None:
    """Refuse to report a ratio unless both paths built the same candles from the same trades."""
    ours, theirs = candle_table(sigflow.candles), candle_table(baseline.candles)
    if (sigflow.trades, sigflow.late) != (baseline.trades, baseline.late):
        raise BenchmarkError(
            f"sigflow counted {sigflow.trades} trades ({sigflow.late} late), "
            f"the baseline {baseline.trades} ({baseline.late} late)"
        )
    if ours.keys() != theirs.keys():
        raise BenchmarkError(f"candle windows differ: {len(ours)} vs {len(theirs)} candles")
    exact = ("open", "high", "low", "close", "trade_count")
    for where, candle in ours.items():
        other = theirs[where]
        same_sums = all(
            math.isclose(candle[name], other[name], rel_tol=1e-9, abs_tol=1e-12)
            for name in ("volume", "quote_volume", "buy_volume")
        )
        if any(candle[name] != other[name] for name in exact) or not same_sums:
            raise BenchmarkError(f"candle {where} differs: sigflow {candle} vs baseline {other}")


def run(options: BenchOptions) -> BenchResult:
    """The candle hot path, CandleStream.process, against a naive per-record agent.

    Both paths run `options.repeats` times on the same batches; medians are reported.
    """
    options.say(f"generating {options.trades:,} trades over {options.symbols} symbols")
    single = trade_records(options.trades, options.seed, options.symbols, 1, event_rate(options))
    batched = trade_records(
        options.trades,
        options.seed,
        options.symbols,
        DEFAULTS.ingest_batch_trades,
        event_rate(options),
    )
    # The same trades per micro-batch on both paths: whole batched records for sigflow.
    baseline_batches = micro_batches(single, options.batch_size)
    batches = micro_batches(batched, max(1, options.batch_size // DEFAULTS.ingest_batch_trades))
    run_sigflow(batches[:WARMUP_BATCHES])
    run_baseline(baseline_batches[:WARMUP_BATCHES])
    paths = {
        "sigflow": lambda: run_sigflow(batches),
        "baseline": lambda: run_baseline(baseline_batches),
    }
    runs: dict[str, list[PathRun]] = {"sigflow": [], "baseline": []}
    for repetition in range(options.repeats):
        # Alternate who goes first so drift (thermal, neighbours) hits both alike.
        order = ["sigflow", "baseline"] if repetition % 2 == 0 else ["baseline", "sigflow"]
        for name in order:
            gc.collect()
            runs[name].append(paths[name]())
        check_same_work(runs["sigflow"][-1], runs["baseline"][-1])
        options.say(
            f"repetition {repetition + 1}/{options.repeats}: "
            + ", ".join(
                f"{name} {options.trades / runs[name][-1].seconds:,.0f} trades/s" for name in paths
            )
        )

    def measured(label: str, path_runs: list[PathRun]) -> Measurement:
        return Measurement(
            label=label,
            rates=tuple(options.trades / r.seconds for r in path_runs),
            batch_seconds=tuple(s for r in path_runs for s in r.batch_seconds),
        )

    return BenchResult(
        bench=NAME,
        unit="trades/s",
        sigflow=measured(
            f"CandleStream.process per micro-batch of {DEFAULTS.ingest_batch_trades}-trade records",
            runs["sigflow"],
        ),
        baseline=measured(BASELINE_NAME, runs["baseline"]),
        baseline_name=BASELINE_NAME,
        title="candle hot path on raw JSON trades records, no Kafka",
        parameters={
            "trades": f"{options.trades:,}",
            "records": f"{len(batched):,} vs {len(single):,}",
            "batch_trades": f"{options.batch_size:,}",
            "keys": options.symbols,
            "event_rate": f"{event_rate(options):,.0f} trades/s",
            "intervals": ",".join(INTERVALS),
            "candles": len(runs["sigflow"][-1].candles),
            "repeats": options.repeats,
            "seed": options.seed,
        },
    )
