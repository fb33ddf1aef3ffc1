"""Event-time OHLCV candles with a watermark, computed on columns.

Pure logic, no Kafka: `CandleState.add()` takes one key's trades in arrival order and
returns the candles whose windows the watermark closed, plus the trades that arrived
after their window was closed. The watermark is `max event time seen - allowed
lateness`; a window `[start, end)` closes once `end <= watermark`. Lateness is decided
per trade in arrival order (a running maximum), so the result does not depend on how
trades are split into batches: replaying the same input yields the same candles.

No trades in a window means no candle for it (no fake flat candles): a gap in the
series is a gap in trading, and consumers can see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

INTERVAL_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def interval_ms(interval: str) -> int:
    """Milliseconds in an interval name such as `1s`, `1m`, `5m`, `1h`, `1d`."""
    count, unit = interval[:-1], interval[-1:]
    if not count.isdigit() or unit not in INTERVAL_UNITS_MS or int(count) == 0:
        raise ValueError(f"unknown candle interval {interval!r}: use e.g. 1s, 1m, 5m, 1h, 1d")
    return int(count) * INTERVAL_UNITS_MS[unit]


@dataclass
class WindowAggregate:
    """Running OHLCV of one window; open/close follow event time, not arrival."""

    open: float
    high: float
    low: float
    close: float
    first_ts: int
    last_ts: int
    volume: float
    quote_volume: float
    trade_count: int
    buy_volume: float


def _running_sum(start: float, values: np.ndarray) -> float:
    """`start + v0 + v1 + ...` added strictly left to right.

    Sequential order makes the float result independent of how trades were split
    into batches, which pairwise `np.sum` would not guarantee.
    """
    return float(np.cumsum(np.concatenate(([start], values)))[-1])


def fold_window(
    aggregate: WindowAggregate | None,
    ts: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    is_buy: np.ndarray,
) -> WindowAggregate:
    """Fold one window's trades (in arrival order) into its aggregate."""
    first = int(np.argmin(ts))  # earliest event time; ties: earliest arrival
    last = len(ts) - 1 - int(np.argmax(ts[::-1]))  # latest event time; ties: latest arrival
    if aggregate is None:
        aggregate = WindowAggregate(
            open=float(price[first]),
            high=float(price[first]),
            low=float(price[first]),
            close=float(price[last]),
            first_ts=int(ts[first]),
            last_ts=int(ts[last]),
            volume=0.0,
            quote_volume=0.0,
            trade_count=0,
            buy_volume=0.0,
        )
    if int(ts[first]) < aggregate.first_ts:
        aggregate.open, aggregate.first_ts = float(price[first]), int(ts[first])
    if int(ts[last]) >= aggregate.last_ts:
        aggregate.close, aggregate.last_ts = float(price[last]), int(ts[last])
    aggregate.high = max(aggregate.high, float(price.max()))
    aggregate.low = min(aggregate.low, float(price.min()))
    aggregate.volume = _running_sum(aggregate.volume, size)
    aggregate.quote_volume = _running_sum(aggregate.quote_volume, price * size)
    aggregate.buy_volume = _running_sum(aggregate.buy_volume, np.where(is_buy, size, 0.0))
    aggregate.trade_count += len(ts)
    return aggregate


@dataclass(frozen=True)
class ClosedCandle:
    """A window the watermark closed: its start and its final aggregate."""

    open_time: int
    aggregate: WindowAggregate


@dataclass(frozen=True)
class TradeColumns:
    """One key's trades in arrival order, as columns."""

    ts: np.ndarray  # int64 epoch ms
    price: np.ndarray  # float64
    size: np.ndarray  # float64
    is_buy: np.ndarray  # bool

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def fold_windows(windows: dict[int, WindowAggregate], trades: TradeColumns, width_ms: int) -> None:
    """Fold accepted trades into `windows` (keyed by window start), in arrival order."""
    if len(trades) == 0:
        return
    starts = trades.ts - trades.ts % width_ms
    order = np.argsort(starts, kind="stable")  # group by window, keep arrival order
    starts = starts[order]
    boundaries = np.flatnonzero(np.diff(starts)) + 1
    for segment in np.split(np.arange(len(starts)), boundaries):
        rows = order[segment]
        start = int(starts[segment[0]])
        windows[start] = fold_window(
            windows.get(start),
            trades.ts[rows],
            trades.price[rows],
            trades.size[rows],
            trades.is_buy[rows],
        )


@dataclass
class CandleState:
    """Open windows and watermark of one (exchange, symbol, interval)."""

    width_ms: int
    lateness_ms: int
    max_ts: int | None = None
    windows: dict[int, WindowAggregate] = field(default_factory=dict)

    def closed_bound(self, max_ts: Any) -> Any:
        """Windows ending at or before this bound are closed (works on ints and arrays)."""
        watermark = max_ts - self.lateness_ms
        return watermark - watermark % self.width_ms

    def add(self, trades: TradeColumns) -> tuple[list[ClosedCandle], np.ndarray]:
        """Fold in trades; return newly closed candles (in time order) and a late mask."""
        if len(trades) == 0:
            return [], np.zeros(0, dtype=bool)
        running_max = np.maximum.accumulate(trades.ts)
        # The newest event time seen before each trade arrived (-1: nothing yet).
        seen_before = np.concatenate(([-1], running_max[:-1]))
        if self.max_ts is not None:
            seen_before = np.maximum(seen_before, self.max_ts)
        window_end = trades.ts - trades.ts % self.width_ms + self.width_ms
        late = (seen_before >= 0) & (window_end <= self.closed_bound(seen_before))
        accepted = ~late
        fold_windows(
            self.windows,
            TradeColumns(
                trades.ts[accepted],
                trades.price[accepted],
                trades.size[accepted],
                trades.is_buy[accepted],
            ),
            self.width_ms,
        )
        newest = int(running_max[-1])
        self.max_ts = newest if self.max_ts is None else max(self.max_ts, newest)
        return self._pop_closed(), late

    def _pop_closed(self) -> list[ClosedCandle]:
        """Remove and return the windows the current watermark closed."""
        bound = self.closed_bound(self.max_ts)
        closed = sorted(start for start in self.windows if start + self.width_ms <= bound)
        return [ClosedCandle(start, self.windows.pop(start)) for start in closed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state for the processor's changelogged table."""
        return {
            "max_ts": self.max_ts,
            "windows": {str(start): vars(agg).copy() for start, agg in self.windows.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], width_ms: int, lateness_ms: int) -> CandleState:
        """Rebuild state saved by `to_dict`."""
        return cls(
            width_ms=width_ms,
            lateness_ms=lateness_ms,
            max_ts=data["max_ts"],
            windows={int(start): WindowAggregate(**agg) for start, agg in data["windows"].items()},
        )
