"""Benchmark `anomalies`: precision and recall of the market detectors on labelled data.

A synthetic multi-exchange market (several exchanges quoting the same symbols, each
feed a Poisson stream of trades around one shared random walk per symbol) with injected
events whose labels are known: price jumps (a step in a symbol's price on every
exchange), volume spikes (one feed's sizes multiplied for a minute), stale feeds (one
feed silent for minutes) and divergences (one exchange's price drifting away and back).

sigflow: the trades go through `CandleStream` in micro-batches and its closed candles
through `CrossStream`, exactly as in the processor. Baseline: a naive detector on the
same candles and trades: mean/standard-deviation z-scores over the same windows, with
sigflow's `info` thresholds, and a stale feed flagged when a gap between trades has a
z-score of at least that threshold.

Scoring, per kind: recall = labels detected / labels; precision = detections that match
a label / detections (detections inside a divergence's ramp, where the offset is below
half its peak, count neither way). The JSON line reports the worst of all per-kind
precisions and recalls (target >= 0.95), median over `repeats` seeds.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.report import BenchOptions, BenchResult, Measurement
from processors.anomalies.rules import AnomalyRules, load_anomaly_rules
from processors.candle_stream import CandleStream, RawRecord
from processors.cross_stream import CrossStream
from schemas.codec import codec_for
from schemas.events import Anomaly, Candle, Trade

NAME = "anomalies"
UNIT = "min precision/recall"
BASELINE_NAME = "naive mean/std z-score detectors, same windows and thresholds"
KINDS = ("price_jump", "volume_spike", "stale_feed", "divergence")
MINUTE = 60_000
START_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
LATENESS_MS = 2_000
BATCH = 2_000
PARTITIONS = 2
START_PRICES = {
    "BTC-USDT": 60_000.0,
    "ETH-USDT": 3_000.0,
    "SOL-USDT": 150.0,
    "XRP-USDT": 0.6,
    "DOGE-USDT": 0.15,
    "LINK-USDT": 15.0,
}
# The naive stale-feed baseline flags a gap between trades this many standard
# deviations above the mean gap (the same bar as the other detectors' info level).
NAIVE_GAP_Z = 6.0
TRADE = codec_for(Trade)
CANDLE = codec_for(Candle)
ANOMALY = codec_for(Anomaly)


@dataclass(frozen=True)
class Divergence:
    """One exchange's price offset from the others, in bps, minute by minute."""

    exchange: str
    symbol: str
    minute: int
    offsets_bps: tuple[float, ...]


@dataclass(frozen=True)
class Scenario:
    """A synthetic market and the events injected into it."""

    exchanges: tuple[str, ...]
    symbols: dict[str, float]
    minutes: int
    trades_per_second: float  # per feed
    seed: int
    minute_volatility: float = 0.001  # of the shared walk, per sqrt(minute)
    jumps: tuple[tuple[str, int, float], ...] = ()  # symbol, minute, relative size
    spikes: tuple[tuple[str, str, int, float], ...] = ()  # exchange, symbol, minute, factor
    stale: tuple[tuple[str, str, int, int], ...] = ()  # exchange, symbol, from ms, to ms
    divergences: tuple[Divergence, ...] = ()

    def feeds(self) -> list[tuple[str, str]]:
        return [(e, s) for s in self.symbols for e in self.exchanges]


def _minute_start(minute: int) -> int:
    return START_TS + minute * MINUTE


def market_trades(scenario: Scenario) -> list[Any]:
    """Every feed's trades, merged in event-time order (ties in feed order)."""
    rng = np.random.default_rng([scenario.seed, 1])
    span_ms = scenario.minutes * MINUTE
    grid_ms = 100
    steps = span_ms // grid_ms + 1
    step_sigma = scenario.minute_volatility / math.sqrt(MINUTE / grid_ms)
    walks = {symbol: np.cumsum(rng.normal(0.0, step_sigma, steps)) for symbol in scenario.symbols}
    for symbol, minute, size in scenario.jumps:
        walks[symbol][(minute * MINUTE) // grid_ms :] += math.log1p(size)
    columns: list[tuple[np.ndarray, ...]] = []
    for index, (exchange, symbol) in enumerate(scenario.feeds()):
        count = rng.poisson(scenario.trades_per_second * span_ms / 1000)
        offsets = np.sort(rng.integers(0, span_ms, count))
        for stale_exchange, stale_symbol, start, end in scenario.stale:
            if (stale_exchange, stale_symbol) == (exchange, symbol):
                offsets = offsets[(offsets < start) | (offsets >= end)]
        log_price = (
            math.log(scenario.symbols[symbol])
            + walks[symbol][offsets // grid_ms]
            + rng.normal(0.0, 5e-5, len(offsets))
        )
        minute_of = offsets // MINUTE
        for divergence in scenario.divergences:
            if (divergence.exchange, divergence.symbol) == (exchange, symbol):
                for step, bps in enumerate(divergence.offsets_bps):
                    log_price[minute_of == divergence.minute + step] += math.log1p(bps / 1e4)
        sizes = 0.1 * rng.lognormal(-0.125, 0.5, len(offsets))  # mean 0.1
        for spike_exchange, spike_symbol, minute, factor in scenario.spikes:
            if (spike_exchange, spike_symbol) == (exchange, symbol):
                sizes[minute_of == minute] *= factor
        sides = rng.random(len(offsets)) < 0.5
        feed = np.full(len(offsets), index)
        columns.append((offsets, feed, np.exp(log_price), sizes, sides))
    merged = [np.concatenate(parts) for parts in zip(*columns, strict=True)]
    order = np.lexsort((merged[1], merged[0]))
    at, feed_of, prices, amounts, buys = (column[order].tolist() for column in merged)
    feeds = scenario.feeds()
    trades = []
    for number, (offset, index, price, amount, buy) in enumerate(
        zip(at, feed_of, prices, amounts, buys, strict=True)
    ):
        exchange, symbol = feeds[index]
        ts = START_TS + offset
        trades.append(
            TRADE.struct(
                exchange=exchange,
                symbol=symbol,
                trade_id=str(number),
                price=price,
                size=amount,
                side="buy" if buy else "sell",
                ts=ts,
                received_ts=ts + 25,
            )
        )
    return trades


@dataclass(frozen=True)
class Label:
    """Where a detection of `kind` on `subject` counts: event times [start, end)."""

    kind: str
    subject: str
    start: int
    end: int


def scenario_labels(scenario: Scenario) -> tuple[list[Label], list[Label]]:
    """(labels to find, zones where a detection counts neither way)."""
    labels: list[Label] = []
    ignored: list[Label] = []
    for symbol, minute, _ in scenario.jumps:
        for exchange in scenario.exchanges:
            start = _minute_start(minute)
            labels.append(Label("price_jump", f"{exchange}:{symbol}", start, start + 1))
    for exchange, symbol, minute, _ in scenario.spikes:
        start = _minute_start(minute)
        labels.append(Label("volume_spike", f"{exchange}:{symbol}", start, start + 1))
    for exchange, symbol, start, end in scenario.stale:
        # Counts while silent and up to a minute after (when a naive detector notices).
        subject = f"{exchange}:{symbol}"
        labels.append(Label("stale_feed", subject, START_TS + start, START_TS + end + MINUTE))
    for divergence in scenario.divergences:
        peak = max(abs(bps) for bps in divergence.offsets_bps)
        for step, bps in enumerate(divergence.offsets_bps):
            start = _minute_start(divergence.minute + step)
            label = Label(
                "divergence", f"{divergence.exchange}:{divergence.symbol}", start, start + 1
            )
            (labels if abs(bps) >= peak / 2 else ignored).append(label)
    return labels, ignored


def random_scenario(
    seed: int, exchanges: int = 3, symbols: int = 4, minutes: int = 240
) -> Scenario:
    """Injected events in non-overlapping 20-minute slots per symbol, after a warm-up."""
    rng = np.random.default_rng([seed, 0])
    names = tuple(["binance", "coinbase", "kraken", "okx", "bybit"][:exchanges])
    prices = dict(list(START_PRICES.items())[:symbols])
    slots = [(symbol, first) for symbol in prices for first in range(30, minutes - 20, 20)]
    order = rng.permutation(len(slots)).tolist()
    jumps, spikes, stale, divergences = [], [], [], []
    plan = ["jump"] * 6 + ["spike"] * 12 + ["stale"] * 6 + ["divergence"] * 6
    for what, slot in zip(plan, order, strict=False):
        symbol, first = slots[slot]
        exchange = names[int(rng.integers(len(names)))]
        minute = first + int(rng.integers(2, 8))
        if what == "jump":
            size = float(rng.uniform(0.015, 0.03)) * (1 if rng.random() < 0.5 else -1)
            jumps.append((symbol, minute, size))
        elif what == "spike":
            spikes.append((exchange, symbol, minute, float(rng.uniform(4.0, 10.0))))
        elif what == "stale":
            start = minute * MINUTE + int(rng.integers(0, MINUTE))
            stale.append((exchange, symbol, start, start + int(rng.integers(3, 9)) * MINUTE))
        else:
            peak = float(rng.uniform(80.0, 150.0)) * (1 if rng.random() < 0.5 else -1)
            # Steps of at most 25 bps a minute: a drift, not a price jump.
            ramp = tuple(peak * k / 6 for k in (1, 2, 3, 4, 5, 6, 6, 6, 5, 4, 3, 2, 1))
            divergences.append(Divergence(exchange, symbol, minute, ramp))
    return Scenario(
        exchanges=names,
        symbols=prices,
        minutes=minutes,
        trades_per_second=2.0,
        seed=seed,
        jumps=tuple(jumps),
        spikes=tuple(spikes),
        stale=tuple(stale),
        divergences=tuple(divergences),
    )


def trade_records(trades: list[Any], topic: str = "trades") -> list[RawRecord]:
    """Records as the `trades` topic holds them, feeds spread over `PARTITIONS`."""
    feeds = sorted({f"{t.exchange}:{t.symbol}" for t in trades})
    partition_of = {key.encode(): index % PARTITIONS for index, key in enumerate(feeds)}
    offsets = [0] * PARTITIONS
    records = []
    for trade in trades:
        key = f"{trade.exchange}:{trade.symbol}".encode()
        partition = partition_of[key]
        records.append(RawRecord(topic, partition, offsets[partition], key, TRADE.encode(trade)))
        offsets[partition] += 1
    return records


@dataclass
class Detections:
    """What a detector reported: (kind, subject, ts) each, plus the candles it saw."""

    found: list[tuple[str, str, int]] = field(default_factory=list)
    candles: list[Any] = field(default_factory=list)


def run_sigflow(records: list[RawRecord], rules: AnomalyRules) -> Detections:
    """The processor's own streams, in micro-batches, state in dicts like the tables."""
    candles = CandleStream(["1m"], LATENESS_MS, anomalies=rules)
    cross = CrossStream(rules.divergence)
    state: dict[bytes, Any] = {}
    cross_state: dict[bytes, Any] = {}
    result = Detections()
    by_symbol_offset = 0
    for start in range(0, len(records), BATCH):
        batch = candles.process(records[start : start + BATCH], state.get)
        state.update(batch.states)
        anomalies = list(batch.anomalies)
        symbol_records = []
        for key, value in batch.by_symbol:
            symbol_records.append(RawRecord("by-symbol", 0, by_symbol_offset, key, value))
            by_symbol_offset += 1
            result.candles.extend(CANDLE.decode_batch(value)[0])
        crossed = cross.process(symbol_records, cross_state.get)
        cross_state.update(crossed.states)
        anomalies += crossed.anomalies
        for _, value in anomalies:
            anomaly = ANOMALY.decode(value)
            result.found.append((anomaly.kind, anomaly.subject, anomaly.ts))
    return result


class NaiveWindow:
    """Mean and standard deviation of the last `size` values (the textbook z-score),
    from running sums."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque()
        self.size = size
        self.total = 0.0
        self.squares = 0.0

    def push(self, value: float) -> None:
        if len(self.values) == self.size:
            old = self.values.popleft()
            self.total -= old
            self.squares -= old * old
        self.values.append(value)
        self.total += value
        self.squares += value * value

    def z(self, value: float) -> float | None:
        count = len(self.values)
        if count < 5:
            return None
        mean = self.total / count
        variance = self.squares / count - mean * mean
        return (value - mean) / math.sqrt(variance) if variance > 0 else None


def run_baseline(trades: list[Any], candles: list[Any], rules: AnomalyRules) -> Detections:
    """Naive detectors on the same trades and candles."""
    result = Detections()
    returns: dict[str, NaiveWindow] = defaultdict(lambda: NaiveWindow(rules.price_jump.window))
    volumes: dict[str, NaiveWindow] = defaultdict(lambda: NaiveWindow(rules.volume_spike.window))
    last_close: dict[str, float] = {}
    by_window: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for candle in candles:
        subject = f"{candle.exchange}:{candle.symbol}"
        if subject in last_close:
            value = math.log(candle.close / last_close[subject])
            z = returns[subject].z(value)
            if z is not None and abs(z) >= rules.price_jump.thresholds.info:
                result.found.append(("price_jump", subject, candle.open_time))
            returns[subject].push(value)
        last_close[subject] = candle.close
        z = volumes[subject].z(candle.volume)
        if z is not None and z >= rules.volume_spike.thresholds.info:
            result.found.append(("volume_spike", subject, candle.open_time))
        volumes[subject].push(candle.volume)
        by_window[(candle.symbol, candle.open_time)][candle.exchange] = candle.close
    deviations: dict[str, NaiveWindow] = defaultdict(lambda: NaiveWindow(rules.divergence.window))
    for (symbol, open_time), closes in sorted(by_window.items(), key=lambda item: item[0][1]):
        if len(closes) < rules.divergence.min_exchanges:
            continue
        center = statistics.median(closes.values())
        for exchange, close in sorted(closes.items()):
            subject = f"{exchange}:{symbol}"
            deviation = (close - center) / center * 1e4
            z = deviations[subject].z(deviation)
            if z is not None and abs(z) >= rules.divergence.thresholds.info:
                result.found.append(("divergence", subject, open_time))
            deviations[subject].push(deviation)
    gaps: dict[str, NaiveWindow] = defaultdict(lambda: NaiveWindow(rules.stale_feed.gap_span))
    last_ts: dict[str, int] = {}
    for trade in trades:
        subject = f"{trade.exchange}:{trade.symbol}"
        if subject in last_ts:
            gap = trade.ts - last_ts[subject]
            z = gaps[subject].z(gap)
            if z is not None and z >= NAIVE_GAP_Z:
                result.found.append(("stale_feed", subject, trade.ts))
            gaps[subject].push(gap)
        last_ts[subject] = trade.ts
    return result


@dataclass(frozen=True)
class KindScore:
    precision: float
    recall: float
    detections: int
    labels: int


def score(
    found: list[tuple[str, str, int]], labels: list[Label], ignored: list[Label]
) -> dict[str, KindScore]:
    """Precision and recall per kind (a detection matches a label of its kind and subject
    whose [start, end) holds its event time)."""
    scores = {}
    for kind in KINDS:
        wanted = [label for label in labels if label.kind == kind]
        neutral = [label for label in ignored if label.kind == kind]

        def hit(subject: str, ts: int, pool: list[Label]) -> Label | None:
            return next((x for x in pool if x.subject == subject and x.start <= ts < x.end), None)

        matched: set[Label] = set()
        true = false = 0
        for found_kind, subject, ts in found:
            if found_kind != kind:
                continue
            label = hit(subject, ts, wanted)
            if label is not None:
                true += 1
                matched.add(label)
            elif hit(subject, ts, neutral) is None:
                false += 1
        counted = true + false
        scores[kind] = KindScore(
            precision=true / counted if counted else 1.0,
            recall=len(matched) / len(wanted) if wanted else 1.0,
            detections=counted,
            labels=len(wanted),
        )
    return scores


def worst(scores: dict[str, KindScore]) -> float:
    return min(min(s.precision, s.recall) for s in scores.values())


def run(options: BenchOptions) -> BenchResult:
    """Anomaly precision/recall per kind: sigflow's detectors against naive z-scores."""
    rules = load_anomaly_rules()
    ours: list[dict[str, KindScore]] = []
    theirs: list[dict[str, KindScore]] = []
    for repetition in range(options.repeats):
        scenario = random_scenario(options.seed + repetition)
        trades = market_trades(scenario)
        labels, ignored = scenario_labels(scenario)
        sigflow = run_sigflow(trade_records(trades), rules)
        baseline = run_baseline(trades, sigflow.candles, rules)
        ours.append(score(sigflow.found, labels, ignored))
        theirs.append(score(baseline.found, labels, ignored))
        options.say(
            f"seed {scenario.seed}: {len(trades):,} trades, {len(labels)} labels; "
            f"worst sigflow {worst(ours[-1]):.3f}, baseline {worst(theirs[-1]):.3f}"
        )
    breakdown = []
    for kind in KINDS:
        row = {"kind": kind, "labels": str(sum(s[kind].labels for s in ours))}
        for who, runs in (("sigflow", ours), ("baseline", theirs)):
            true_found = sum(s[kind].precision * s[kind].detections for s in runs)
            detections = sum(s[kind].detections for s in runs)
            found_labels = sum(s[kind].recall * s[kind].labels for s in runs)
            labels_total = sum(s[kind].labels for s in runs)
            row[f"{who} P"] = f"{true_found / detections:.3f}" if detections else "-"
            row[f"{who} R"] = f"{found_labels / labels_total:.3f}" if labels_total else "-"
        breakdown.append(row)
    return BenchResult(
        bench=NAME,
        unit=UNIT,
        sigflow=Measurement(
            "robust detectors in CandleStream + CrossStream", tuple(worst(s) for s in ours)
        ),
        # Floored so the ratio stays finite when the baseline fails a kind entirely.
        baseline=Measurement(BASELINE_NAME, tuple(max(worst(s), 1e-3) for s in theirs)),
        baseline_name=BASELINE_NAME,
        title="labelled synthetic market, precision and recall per kind",
        parameters={
            "seeds": f"{options.seed}..{options.seed + options.repeats - 1}",
            "exchanges": 3,
            "symbols": 4,
            "minutes": 240,
            "trades/s per feed": 2.0,
        },
        breakdown=tuple(breakdown),
    )
