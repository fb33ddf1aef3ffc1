"""Turns a micro-batch of closed candles keyed by symbol into cross-exchange spreads and
divergence anomalies.

The trades agent publishes every closed candle a second time, keyed by symbol, to an
internal topic (one JSON array record per symbol and batch, like `trades` records);
this stream is the thin layer between those records and the pure
`CrossExchangeAligner` of each (symbol, interval). Per-symbol state (last offset and
the aligners) lives in a Faust table keyed by symbol, co-partitioned with the topic, and
records at or below the stored offset are skipped after a restart.

Spreads are published as extra `indicators` records of the candle they belong to:
`xex_deviation_bps` (this exchange's close vs the cross-exchange median),
`xex_spread_bps` (max - min close vs the median) and `xex_exchanges` (how many
exchanges the window had), so they land in the long-form indicators table and API
without a new table.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from processors.anomalies.divergence import CrossExchangeAligner, SpreadPoint
from processors.anomalies.findings import anomaly_record
from processors.anomalies.rules import DivergenceRules
from processors.candle_stream import RawRecord, StateLoader
from processors.candles import interval_ms
from schemas.codec import RejectedElement, codec_for
from schemas.dead_letters import reject_element, reject_record
from schemas.events import Candle, IndicatorValues
from schemas.exceptions import SchemaError

CANDLE_CODEC = codec_for(Candle)
INDICATOR_CODEC = codec_for(IndicatorValues)
COMPONENT = "processor"
SPREAD_NAMES = ("xex_deviation_bps", "xex_spread_bps", "xex_exchanges")


@dataclass
class CrossResult:
    """What one micro-batch of symbol-keyed candles produced."""

    indicators: list[tuple[bytes, bytes]] = field(default_factory=list)
    anomalies: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes, bytes]] = field(default_factory=list)
    states: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    anomaly_kinds: Counter[str] = field(default_factory=Counter)
    candles: int = 0
    late: int = 0  # candles whose window was evaluated before they arrived
    skipped: int = 0


class CrossStream:
    """Cross-exchange alignment for every symbol of a batch."""

    def __init__(self, rules: DivergenceRules) -> None:
        self.rules = rules

    def process(self, records: Iterable[RawRecord], load_state: StateLoader) -> CrossResult:
        """Decode, dead-letter and align a batch; return outputs and new state per symbol."""
        result = CrossResult()
        by_key: dict[bytes, list[tuple[RawRecord, Any]]] = defaultdict(list)
        for record in records:
            try:
                candles, rejected = CANDLE_CODEC.decode_batch(record.value)
            except SchemaError as exc:
                result.dead_letters.append(reject_record(record, exc.reason, "schema", COMPONENT))
                continue
            for candle in candles:
                symbol = candle.symbol.encode()
                if record.key == symbol:
                    by_key[symbol].append((record, candle))
                else:
                    reason = f"record key {record.key!r} is not the symbol"
                    rejected.append(RejectedElement(CANDLE_CODEC.encode(candle), reason))
            for element in rejected:
                result.dead_letters.append(reject_element(record, element, "schema", COMPONENT))
        for key, items in by_key.items():
            self._process_symbol(key, items, load_state(key), result)
        return result

    def _process_symbol(
        self,
        key: bytes,
        items: list[tuple[RawRecord, Any]],
        saved: dict[str, Any] | None,
        result: CrossResult,
    ) -> None:
        last_offset = saved["offset"] if saved else -1
        fresh = [(record, candle) for record, candle in items if record.offset > last_offset]
        result.skipped += len(items) - len(fresh)
        if not fresh:
            return
        stored = (saved or {}).get("series", {})
        aligners: dict[str, CrossExchangeAligner] = {}
        for _, candle in fresh:
            aligner = aligners.get(candle.interval)
            if aligner is None:
                aligner = aligners[candle.interval] = CrossExchangeAligner(
                    self.rules,
                    candle.symbol,
                    candle.interval,
                    interval_ms(candle.interval),
                    stored.get(candle.interval),
                )
            spreads, findings, late = aligner.add(candle.exchange, candle.open_time, candle.close)
            result.late += late
            result.indicators.extend(
                spread_record(candle.symbol, candle.interval, point) for point in spreads
            )
            for finding in findings:
                result.anomalies.append(anomaly_record(finding))
                result.anomaly_kinds[finding.kind] += 1
        result.candles += len(fresh)
        series = dict(stored)
        series.update({name: aligner.to_dict() for name, aligner in aligners.items()})
        result.states[key] = {"offset": fresh[-1][0].offset, "series": series}


def spread_record(symbol: str, interval: str, point: SpreadPoint) -> tuple[bytes, bytes]:
    """The `indicators` record (key `exchange:symbol`) carrying one spread point."""
    values = INDICATOR_CODEC.struct(
        exchange=point.exchange,
        symbol=symbol,
        interval=interval,
        open_time=point.open_time,
        values=dict(
            zip(
                SPREAD_NAMES,
                (point.deviation_bps, point.spread_bps, float(point.exchanges)),
                strict=True,
            )
        ),
    )
    return f"{point.exchange}:{symbol}".encode(), INDICATOR_CODEC.encode(values)
