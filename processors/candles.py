"""Event-time OHLCV candles of several intervals with one watermark.

Pure logic, no Kafka. `CandleBuilder.add()` takes one key's trades in arrival order and
returns the candles whose windows the watermark closed, of every interval, plus the
trades that arrived after their window was closed.

Trades are folded once, into the finest interval only. Each coarser interval is built
from closed candles of a finer one (its *source*: the coarsest configured interval that
divides it), in time order: OHLC, volume, quote volume (so VWAP = quote / volume), trade
count and buy volume all compose from disjoint sub-windows. So the per-trade cost does
not depend on how many intervals there are, and a coarse candle holds exactly the
trades of its finest windows.

Watermark and lateness: the watermark is `newest event time seen - allowed lateness`.
A finest window `[start, end)` closes once `end <= watermark`, floored to the finest
width. A coarser window closes when the finest window that ends at its end closes, that
is under the same rule `end <= watermark`, once every finest window inside it has
closed. Lateness is decided once, on the finest interval: a trade is late if and only
if its finest window had already closed when it arrived; it then counts in no interval.
Lateness is judged per trade in arrival order (a running maximum), so the result does
not depend on how trades are split into batches: the same input yields the same
candles, byte for byte.

No trades in a window means no candle for it, in any interval (no fake flat candles):
a gap in the series is a gap in trading.

The fold is plain Python per trade on purpose: a numpy version paid ~90 µs of fixed
cost per key per batch, which made it slower than a naive agent once a batch spread
over hundreds of symbols (see `sigflow bench processors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from processors.exceptions import CandleStateError

INTERVAL_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def interval_ms(interval: str) -> int:
    """Milliseconds in an interval name such as `1s`, `1m`, `5m`, `1h`, `1d`."""
    count, unit = interval[:-1], interval[-1:]
    if not count.isdigit() or unit not in INTERVAL_UNITS_MS or int(count) == 0:
        raise ValueError(f"unknown candle interval {interval!r}: use e.g. 1s, 1m, 5m, 1h, 1d")
    return int(count) * INTERVAL_UNITS_MS[unit]


@dataclass(slots=True)
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

    def extend(self, later: WindowAggregate) -> None:
        """Fold in the aggregate of a later, disjoint window (all its trades come after)."""
        self.close, self.last_ts = later.close, later.last_ts
        if later.high > self.high:
            self.high = later.high
        if later.low < self.low:
            self.low = later.low
        self.volume += later.volume
        self.quote_volume += later.quote_volume
        self.trade_count += later.trade_count
        self.buy_volume += later.buy_volume

    def to_row(self, start: int) -> list[Any]:
        """Compact form for the state table: `[start, open, high, ..., buy_volume]`."""
        return [
            start,
            self.open,
            self.high,
            self.low,
            self.close,
            self.first_ts,
            self.last_ts,
            self.volume,
            self.quote_volume,
            self.trade_count,
            self.buy_volume,
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> tuple[int, WindowAggregate]:
        """The window start and aggregate of a `to_row` list."""
        start, *values = row
        return int(start), cls(*values)


@dataclass(frozen=True)
class ClosedCandle:
    """A window the watermark closed: its start and its final aggregate."""

    open_time: int
    aggregate: WindowAggregate


@dataclass(frozen=True)
class TradeColumns:
    """One key's trades in arrival order, as parallel lists."""

    ts: list[int]
    price: list[float]
    size: list[float]
    is_buy: list[bool]

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class LateTrade:
    """A trade whose finest window had closed when it arrived."""

    index: int  # position in the `TradeColumns` given to `add`
    window_start: int  # of its finest window
    watermark: int  # newest event time seen before it, minus the allowed lateness


@dataclass(frozen=True)
class Ladder:
    """The configured intervals, finest first, each with the interval it is built from."""

    widths: dict[str, int]  # name -> width in ms, ascending
    sources: dict[str, str]  # coarser name -> the finer name its candles are built from

    @classmethod
    def of(cls, intervals: list[str] | tuple[str, ...]) -> Ladder:
        """Check that the intervals nest (the finest divides every other) and order them."""
        widths = {name: interval_ms(name) for name in intervals}
        if not widths:
            raise ValueError("at least one candle interval is needed")
        ordered = dict(sorted(widths.items(), key=lambda item: item[1]))
        names = list(ordered)
        if len(set(ordered.values())) != len(ordered):
            raise ValueError(f"candle intervals {names} name the same width twice")
        finest = ordered[names[0]]
        if any(width % finest for width in ordered.values()):
            raise ValueError(
                f"candle intervals {names} must all be multiples of the finest, {names[0]}"
            )
        sources = {
            name: next(finer for finer in reversed(names[:position]) if width % ordered[finer] == 0)
            for position, (name, width) in enumerate(ordered.items())
            if position > 0
        }
        return cls(ordered, sources)

    @property
    def finest(self) -> str:
        return next(iter(self.widths))


@dataclass
class CandleBuilder:
    """Open windows and watermark of one (exchange, symbol), for every interval."""

    ladder: Ladder
    lateness_ms: int
    max_ts: int | None = None
    # Open windows by interval: the finest holds those the watermark has not closed
    # (about lateness / width + 1); a coarser one at most the window around the watermark.
    windows: dict[str, dict[int, WindowAggregate]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.ladder.widths:
            self.windows.setdefault(name, {})

    def closed_bound(self, max_ts: int) -> int:
        """Finest windows ending at or before this bound are closed (so are coarser ones)."""
        watermark = max_ts - self.lateness_ms
        return watermark - watermark % self.ladder.widths[self.ladder.finest]

    def add(self, trades: TradeColumns) -> tuple[dict[str, list[ClosedCandle]], list[LateTrade]]:
        """Fold in trades in arrival order; return the newly closed candles by interval
        (each list in time order) and the late trades."""
        width = self.ladder.widths[self.ladder.finest]
        windows, max_ts, lateness = self.windows[self.ladder.finest], self.max_ts, self.lateness_ms
        # No bound before the first trade: nothing can be late yet.
        bound = None if max_ts is None else self.closed_bound(max_ts)
        watermark = 0 if max_ts is None else max_ts - lateness
        late: list[LateTrade] = []
        for index, (ts, price, size, is_buy) in enumerate(
            zip(trades.ts, trades.price, trades.size, trades.is_buy, strict=True)
        ):
            start = ts - ts % width
            if bound is not None and start + width <= bound:
                late.append(LateTrade(index, start, watermark))
                continue
            if max_ts is None or ts > max_ts:
                # Inline `closed_bound`: this runs for nearly every trade.
                max_ts, watermark = ts, ts - lateness
                bound = watermark - watermark % width
            aggregate = windows.get(start)
            if aggregate is None:
                windows[start] = WindowAggregate(
                    open=price,
                    high=price,
                    low=price,
                    close=price,
                    first_ts=ts,
                    last_ts=ts,
                    volume=size,
                    quote_volume=price * size,
                    trade_count=1,
                    buy_volume=size if is_buy else 0.0,
                )
                continue
            # The trade folded into its window, inline: a method call per trade cost more.
            if ts < aggregate.first_ts:  # ties keep the earliest arrival as open
                aggregate.open, aggregate.first_ts = price, ts
            if ts >= aggregate.last_ts:  # ties take the latest arrival as close
                aggregate.close, aggregate.last_ts = price, ts
            if price > aggregate.high:
                aggregate.high = price
            if price < aggregate.low:
                aggregate.low = price
            # Added one by one in arrival order: the float sums do not depend on batching.
            aggregate.volume += size
            aggregate.quote_volume += price * size
            aggregate.trade_count += 1
            if is_buy:
                aggregate.buy_volume += size
        self.max_ts = max_ts
        return self._pop_closed(), late

    def _pop_closed(self) -> dict[str, list[ClosedCandle]]:
        """Remove and return the windows the current watermark closed, finest first, each
        coarser interval first fed with the newly closed candles of its source."""
        if self.max_ts is None:
            return {}
        bound = self.closed_bound(self.max_ts)
        closed: dict[str, list[ClosedCandle]] = {}
        for name, width in self.ladder.widths.items():
            windows = self.windows[name]
            source = self.ladder.sources.get(name)
            for finer in closed.get(source, ()) if source else ():
                start = finer.open_time - finer.open_time % width
                aggregate = windows.get(start)
                if aggregate is None:
                    windows[start] = replace(finer.aggregate)
                else:
                    aggregate.extend(finer.aggregate)
            ends = sorted(start for start in windows if start + width <= bound)
            closed[name] = [ClosedCandle(start, windows.pop(start)) for start in ends]
        return closed

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-ready state for the processor's changelogged table."""
        return {
            "max_ts": self.max_ts,
            "widths": {name: self.ladder.widths[name] for name in self.windows},
            "windows": {
                name: [agg.to_row(start) for start, agg in windows.items()]
                for name, windows in self.windows.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], ladder: Ladder, lateness_ms: int) -> CandleBuilder:
        """Rebuild state saved by `to_dict`; intervals added since start empty.

        The finest interval cannot change under saved state: its open windows hold
        trades that no other width can take apart or regroup.
        """
        saved_widths: dict[str, int] = data["widths"]
        saved_finest = min(saved_widths, key=saved_widths.__getitem__, default=None)
        if saved_finest is not None and saved_widths[saved_finest] != ladder.widths[ladder.finest]:
            raise CandleStateError(
                f"saved candle state is built on {saved_finest} windows, the configured "
                f"finest interval is {ladder.finest}: keep {saved_finest} as the finest "
                "interval or start the processor under a new app id"
            )
        windows = {
            name: dict(WindowAggregate.from_row(row) for row in data["windows"].get(name, []))
            for name in ladder.widths
        }
        return cls(ladder, lateness_ms, data["max_ts"], windows)
