"""Turns a micro-batch of raw `trades` records into candles, indicators, signals,
anomalies and dead letters.

The Faust agent is a thin shell around `CandleStream.process()`: this module decodes,
routes bad input to the DLQ, skips records the state has already seen (so a restart
that re-reads uncommitted offsets changes nothing), feeds each key's trades to its
`CandleBuilder` (every interval at once, lateness decided on the finest), each closed
candle to its interval's `IndicatorSet`, its indicators (with the previous candle's) to
the signal rules and the candle to the price-jump and volume-spike detectors. A key's
closed candles come out ordered by close time, finer interval first on a tie, which is
the same order however the trades were batched. Each partition's trades, in offset
order, also go through that partition's `FeedClock` (stale feeds), kept in the same
table under a key of its own. Closed candles are also returned keyed by symbol, for the
cross-exchange stream.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from processors.anomalies.findings import Finding, anomaly_record
from processors.anomalies.market import SeriesDetectors
from processors.anomalies.price_jump import CandleView
from processors.anomalies.rules import AnomalyRules, load_anomaly_rules
from processors.anomalies.stale_feed import FeedClock
from processors.candles import CandleBuilder, ClosedCandle, Ladder, LateTrade, TradeColumns
from processors.exceptions import CandleStateError
from processors.indicators import IndicatorSet
from processors.placement import partition_key
from processors.signals import FiredSignal, SignalEngine, load_rules
from schemas.codec import RejectedElement, codec_for
from schemas.dead_letters import reject_element, reject_record
from schemas.events import Candle, IndicatorValues, Signal, Trade
from schemas.exceptions import SchemaError

TRADE_CODEC = codec_for(Trade)
CANDLE_CODEC = codec_for(Candle)
INDICATOR_CODEC = codec_for(IndicatorValues)
SIGNAL_CODEC = codec_for(Signal)
COMPONENT = "processor"


@dataclass(frozen=True)
class RawRecord:
    """One consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class BatchResult:
    """What one micro-batch produced."""

    candles: list[tuple[bytes, bytes]] = field(default_factory=list)
    closed: list[Any] = field(default_factory=list)  # the same candles, as structs
    indicators: list[tuple[bytes, bytes]] = field(default_factory=list)
    signals: list[tuple[bytes, bytes]] = field(default_factory=list)
    anomalies: list[tuple[bytes, bytes]] = field(default_factory=list)
    # closed candles keyed by symbol: one JSON array record per symbol per batch
    by_symbol: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes, bytes]] = field(default_factory=list)
    states: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    anomaly_kinds: Counter[str] = field(default_factory=Counter)
    lateness_ms: list[int] = field(default_factory=list)  # of trades that came out of order
    trades: int = 0
    late: int = 0
    skipped: int = 0

    def add_findings(self, findings: Iterable[Finding]) -> None:
        for finding in findings:
            self.anomalies.append(anomaly_record(finding))
            self.anomaly_kinds[finding.kind] += 1


StateLoader = Callable[[bytes], dict[str, Any] | None]


@cache
def feed_clock_key(partition: int, partitions: int | None) -> bytes:
    """The state-table key of a trades partition's `FeedClock`.

    With `partitions` given, a key that Kafka's default partitioner (murmur2, as the
    table's changelog producer uses) places on `partition` itself, so the clock's
    changelog is co-partitioned with the trades it watches and moves with them on a
    rebalance. In-process (benchmarks, tests) placement does not matter: pass None.
    """
    return partition_key("__feeds__", partition, partitions)


class CandleStream:
    """Candle building for every interval, keyed by the record key `exchange:symbol`."""

    def __init__(
        self,
        intervals: Iterable[str],
        lateness_ms: int,
        signals: SignalEngine | None = None,
        anomalies: AnomalyRules | None = None,
        partitions: int | None = None,
    ) -> None:
        self.ladder = Ladder.of(tuple(intervals))
        self.lateness_ms = lateness_ms
        self.signals = signals or SignalEngine(load_rules())
        self.anomalies = anomalies or load_anomaly_rules()
        self.partitions = partitions
        # The last state dict written per key and the live state it was written from:
        # rebuilding indicators and detectors from dicts every batch cost ~10 % of the
        # hot path. Used only while the table still returns that very dict, so state
        # restored from the changelog (restart, rebalance) is always rebuilt from it.
        self._live: dict[bytes, tuple[dict[str, Any], KeyState]] = {}

    def process(self, records: Iterable[RawRecord], load_state: StateLoader) -> BatchResult:
        """Decode, dead-letter and aggregate a batch; return outputs and new state per key."""
        result = BatchResult()
        by_key: dict[bytes, list[tuple[RawRecord, list[Any]]]] = defaultdict(list)
        by_partition: dict[int, list[tuple[int, bytes, list[int]]]] = defaultdict(list)
        for record in records:
            key = record.key or b""
            trades = self._decode(record, result)
            if trades:
                by_key[key].append((record, trades))
                by_partition[record.partition].append(
                    (record.offset, key, [trade.ts for trade in trades])
                )
        for key, runs in by_key.items():
            self._process_key(key, runs, load_state(key), result)
        for partition, observed in by_partition.items():
            state_key = feed_clock_key(partition, self.partitions)
            clock = FeedClock.from_dict(
                self.anomalies.stale_feed, self.lateness_ms, load_state(state_key)
            )
            findings, lateness = clock.observe(observed)
            result.add_findings(findings)
            result.lateness_ms.extend(lateness)
            result.states[state_key] = clock.to_dict()
        result.by_symbol = batched_by_key(result.by_symbol)
        return result

    def _decode(self, record: RawRecord, result: BatchResult) -> list[Any]:
        """The record's trades; bad ones (or a bad record) go to the dead letters."""
        try:
            trades, rejected = TRADE_CODEC.decode_batch(record.value)
        except SchemaError as exc:
            result.dead_letters.append(reject_record(record, exc.reason, "schema", COMPONENT))
            return []
        for element in rejected:
            result.dead_letters.append(reject_element(record, element, "schema", COMPONENT))
        exchange, _, symbol = (record.key or b"").decode(errors="replace").partition(":")
        if all(trade.exchange == exchange and trade.symbol == symbol for trade in trades):
            return trades  # the usual case, checked without a string per trade
        good = []
        for trade in trades:
            expected = f"{trade.exchange}:{trade.symbol}".encode()
            if record.key == expected:
                good.append(trade)
            else:
                reason = f"record key {record.key!r} is not exchange:symbol {expected!r}"
                element = RejectedElement(TRADE_CODEC.encode(trade), reason)
                result.dead_letters.append(reject_element(record, element, "schema", COMPONENT))
        return good

    def _process_key(
        self,
        key: bytes,
        runs: list[tuple[RawRecord, list[Any]]],
        saved: dict[str, Any] | None,
        result: BatchResult,
    ) -> None:
        """Fold one key's records (each with its decoded trades, in offset order)."""
        last_offset = saved["offset"] if saved else -1
        fresh = [(record, trades) for record, trades in runs if record.offset > last_offset]
        result.skipped += sum(
            len(trades) for record, trades in runs if record.offset <= last_offset
        )
        if not fresh:
            return
        trades = [trade for _, run in fresh for trade in run]
        columns = TradeColumns(
            ts=[t.ts for t in trades],
            price=[t.price for t in trades],
            size=[t.size for t in trades],
            is_buy=[t.side == "buy" for t in trades],
        )
        # Popped first: if this batch fails half-way, the next one rebuilds from the table.
        live = self._live.pop(key, None)
        if live is not None and live[0] is saved:
            state = live[1]
        else:
            state = KeyState.from_dict(saved, self.ladder, self.lateness_ms, self.anomalies)
        closed, late = state.candles.add(columns)
        widths = self.ladder.widths
        in_close_order = sorted(
            ((name, window) for name, windows in closed.items() for window in windows),
            key=lambda item: (item[1].open_time + widths[item[0]], widths[item[0]]),
        )
        for name, window in in_close_order:
            self._emit(key, trades[0], state, name, window, result)
        if late:
            records = [record for record, run in fresh for _ in run]
            for late_trade in late:
                result.dead_letters.append(
                    self._late_letter(
                        records[late_trade.index], trades[late_trade.index], late_trade
                    )
                )
        result.late += len(late)
        result.trades += len(trades)
        saved = result.states[key] = state.to_dict(last_offset=fresh[-1][0].offset)
        self._live[key] = (saved, state)

    def _emit(
        self,
        key: bytes,
        sample: Any,
        state: KeyState,
        name: str,
        window: ClosedCandle,
        result: BatchResult,
    ) -> None:
        """One closed candle with its indicators, signals and market anomalies; `sample`
        is any trade of the key (for its exchange and symbol)."""
        width = self.ladder.widths[name]
        candle = to_candle(sample.exchange, sample.symbol, name, width, window)
        state.changed.add(name)
        values = indicator_values(candle, state.indicators[name])
        fired = self.signals.evaluate(
            close=candle.close, values=values.values, previous=state.previous.get(name)
        )
        state.previous[name] = {**values.values, "close": candle.close}
        encoded = CANDLE_CODEC.encode(candle)
        result.candles.append((key, encoded))
        result.closed.append(candle)
        result.by_symbol.append((candle.symbol.encode(), encoded))
        view = CandleView(
            exchange=candle.exchange,
            symbol=candle.symbol,
            interval=name,
            width_ms=width,
            open_time=candle.open_time,
            close=candle.close,
            volume=candle.volume,
        )
        result.add_findings(state.detectors[name].update(view))
        result.indicators.append((key, INDICATOR_CODEC.encode(values)))
        result.signals.extend(
            (key, SIGNAL_CODEC.encode(to_signal(candle, signal))) for signal in fired
        )

    def _late_letter(self, record: RawRecord, trade: Any, late: LateTrade) -> tuple[bytes, bytes]:
        """The dead letter of a trade whose finest window had closed: it counts nowhere."""
        finest = self.ladder.finest
        end = late.window_start + self.ladder.widths[finest]
        reason = (
            f"trade at {trade.ts} arrived after its {finest} window "
            f"[{late.window_start}, {end}) closed under watermark {late.watermark} "
            f"(newest trade time - allowed lateness {self.lateness_ms} ms); "
            "counted in no interval"
        )
        element = RejectedElement(TRADE_CODEC.encode(trade), reason)
        return reject_element(record, element, "late", COMPONENT)


@dataclass
class KeyState:
    """Everything kept per record key: candles, and indicators and detectors per interval.

    The state dict is written to the changelogged table after every batch, so the
    indicators and detectors of an interval are serialized again only when one of its
    candles closed; otherwise their last dicts are reused (they are never mutated).
    """

    candles: CandleBuilder
    indicators: dict[str, IndicatorSet]
    previous: dict[str, dict[str, float]]  # last candle's indicators + close, per interval
    detectors: dict[str, SeriesDetectors]
    written: dict[str, tuple[dict[str, Any], dict[str, Any]]]  # interval -> last dicts
    changed: set[str]  # intervals with a candle closed since `written`

    @classmethod
    def from_dict(
        cls,
        saved: dict[str, Any] | None,
        ladder: Ladder,
        lateness_ms: int,
        rules: AnomalyRules,
    ) -> KeyState:
        """State from the table, with fresh state for intervals it does not have yet."""
        saved = saved or {}
        if "intervals" in saved:
            raise CandleStateError(
                "saved candle state has the per-interval layout of an older sigflow; "
                "start the processor under a new app id (SIGFLOW_PROCESSOR_APP_ID)"
            )
        indicators = saved.get("indicators", {})
        detectors = saved.get("detectors", {})
        known = set(indicators) & set(detectors)
        return cls(
            candles=CandleBuilder.from_dict(saved["candles"], ladder, lateness_ms)
            if "candles" in saved
            else CandleBuilder(ladder, lateness_ms),
            indicators={
                name: IndicatorSet.from_dict(indicators[name]) if name in known else IndicatorSet()
                for name in ladder.widths
            },
            previous=dict(saved.get("previous", {})),
            detectors={
                name: SeriesDetectors(rules, detectors[name] if name in known else None)
                for name in ladder.widths
            },
            written={
                name: (indicators[name], detectors[name]) for name in ladder.widths if name in known
            },
            changed={name for name in ladder.widths if name not in known},
        )

    def to_dict(self, last_offset: int) -> dict[str, Any]:
        """JSON-ready state, with the offset of the last record folded in."""
        for name in self.changed:
            self.written[name] = (self.indicators[name].to_dict(), self.detectors[name].to_dict())
        self.changed.clear()
        return {
            "offset": last_offset,
            "candles": self.candles.to_dict(),
            "indicators": {name: self.written[name][0] for name in self.indicators},
            "previous": dict(self.previous),  # a copy: the live state goes on changing
            "detectors": {name: self.written[name][1] for name in self.indicators},
        }


def to_candle(exchange: str, symbol: str, interval: str, width: int, closed: ClosedCandle) -> Any:
    """The `Candle` event of a closed window."""
    agg = closed.aggregate
    return CANDLE_CODEC.struct(
        exchange=exchange,
        symbol=symbol,
        interval=interval,
        open_time=closed.open_time,
        close_time=closed.open_time + width,
        open=agg.open,
        high=agg.high,
        low=agg.low,
        close=agg.close,
        volume=agg.volume,
        quote_volume=agg.quote_volume,
        vwap=agg.quote_volume / agg.volume,
        trade_count=agg.trade_count,
        buy_volume=agg.buy_volume,
        sell_volume=agg.volume - agg.buy_volume,
        final=True,
    )


def indicator_values(candle: Any, indicators: IndicatorSet) -> Any:
    """Advance `indicators` by one closed candle; the `IndicatorValues` event it yields."""
    values = indicators.update(
        open=candle.open,
        high=candle.high,
        low=candle.low,
        close=candle.close,
        volume=candle.volume,
        vwap=candle.vwap,
    )
    return INDICATOR_CODEC.struct(
        exchange=candle.exchange,
        symbol=candle.symbol,
        interval=candle.interval,
        open_time=candle.open_time,
        values=values,
    )


def to_signal(candle: Any, fired: FiredSignal) -> Any:
    """The `Signal` event of a rule that fired on a closed candle."""
    return SIGNAL_CODEC.struct(
        exchange=candle.exchange,
        symbol=candle.symbol,
        interval=candle.interval,
        open_time=candle.open_time,
        rule=fired.rule,
        direction=fired.direction,
        strength=fired.strength,
        price=candle.close,
        explanation=fired.explanation,
    )


BY_SYMBOL_RECORD_CANDLES = 500  # ~200 kB a record, well under Kafka's 1 MB default


def batched_by_key(records: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Records whose value is the JSON array of up to `BY_SYMBOL_RECORD_CANDLES` values of
    one key, in order: one send and one consume per symbol and batch instead of one per
    closed candle (a backlog batch can close thousands)."""
    grouped: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in records:
        grouped[key].append(value)
    size = BY_SYMBOL_RECORD_CANDLES
    return [
        (key, b"[" + b",".join(values[start : start + size]) + b"]")
        for key, values in grouped.items()
        for start in range(0, len(values), size)
    ]
