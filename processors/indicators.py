"""Streaming technical indicators over closed candles, matching TA-Lib's defaults.

Pure logic, no Kafka: each indicator is a small class whose `update()` takes one closed
candle's values, costs O(1) (a fixed window of at most 30 floats is re-read, which keeps
the rolling statistics exact instead of drifting like running sums) and returns the
value, or None while it warms up. `to_dict()`/`from_dict()` give plain JSON state, so a
Faust table changelog can hold it and a restart continues bit for bit.

`IndicatorSet` updates all of them for one (exchange, symbol, interval) series and
returns the canonical names (see ARCHITECTURE.md) that are warmed up.

Conventions, checked against `talib` in tests/unit/test_indicators.py (index 0 is the
series' first candle; "first value at" is where TA-Lib's NaNs end):

- `sma_20`: mean of the last 20 closes. First value at 19.
- `ema_12`, `ema_26`: seeded with the SMA of the first N closes, then
  `(x - ema) * k + ema` with `k = 2 / (N + 1)`. First values at 11 and 25.
- `rsi_14`: Wilder. Average gain and loss seeded with the simple mean of the first 14
  close-to-close changes, then `(average * 13 + change) / 14`; the value is
  `100 * gain / (gain + loss)`, and 0 when both are 0 (a flat series: TA-Lib's choice,
  not 50). First value at 14.
- `macd`, `macd_signal`, `macd_hist` (12/26/9): see below. First values at 33.
- `bb_upper`, `bb_middle`, `bb_lower`: SMA 20 plus/minus 2 population (ddof 0)
  standard deviations of the same 20 closes. First values at 19.
- `atr_14`: true range `max(high - low, abs(prev_close - high), abs(prev_close - low))`
  from the second candle on; Wilder average `(atr * 13 + tr) / 14` seeded with the
  mean of the first 14 true ranges. First value at 14.
- `realized_vol_30`: population standard deviation (ddof 0) of the last 30 log returns
  `ln(close / prev_close)`, not annualized. First value at 30.
- `vwap`: the candle's own vwap, passed through (no session accumulation). From 0.

TA-Lib's MACD quirk, matched here: MACD does not use two stand-alone EMAs. Both EMAs
are aligned on the slow one: the slow EMA is seeded at index 25 with the mean of closes
0..25, and the fast EMA is seeded at the same index with the mean of closes 14..25 only
(not at index 11 with closes 0..11 as `EMA(12)` is), so `macd` differs from
`ema_12 - ema_26` until the seed difference has decayed (~(11/13)^n, below 1e-12 of the
price after ~165 candles). The MACD line exists from index 25, but TA-Lib emits all three
outputs only from 33, when the signal EMA (k = 2/10) is seeded with the mean of the
first 9 MACD values (indices 25..33). We emit `macd` from 33 too.

`realized_vol_30` has no TA-Lib function; it equals `STDDEV(ln(ROCR(close, 1)), 30)`,
whose population convention it follows. It is per candle interval: annualize with
`sqrt(candles per year)` if needed.

Rolling standard deviations (Bollinger, realized volatility) are recomputed from the
window's values around their mean (`math.fsum`, two passes) rather than from running sums
of `x` and `x^2`, which drift and cancel when the price is large against its spread.
"""

from __future__ import annotations

import math
from collections import deque
from operator import mul
from typing import Any, ClassVar

from processors.exceptions import IndicatorInputError, IndicatorStateError

State = dict[str, Any]

INDICATOR_NAMES: tuple[str, ...] = (
    "sma_20",
    "ema_12",
    "ema_26",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "atr_14",
    "realized_vol_30",
    "vwap",
)


def _check_period(period: int, minimum: int = 1) -> int:
    if not isinstance(period, int) or isinstance(period, bool) or period < minimum:
        raise ValueError(f"indicator period must be an integer >= {minimum}, got {period!r}")
    return period


def _mean(values: deque[float] | list[float]) -> float:
    return math.fsum(values) / len(values)


def population_stdev(values: deque[float] | list[float], mean: float | None = None) -> float:
    """Two-pass population standard deviation: exact where `E[x^2] - E[x]^2` cancels.

    `mean` is the values' own mean when the caller has it already (Bollinger bands).
    """
    if mean is None:
        mean = _mean(values)
    deviations = [value - mean for value in values]
    return math.sqrt(math.fsum(map(mul, deviations, deviations)) / len(values))


def _expect_kind(state: State, kind: str) -> None:
    if state.get("kind") != kind:
        raise IndicatorStateError(f"state of kind {state.get('kind')!r} is not a {kind!r}")


class SimpleMovingAverage:
    """Mean of the last `period` values (TA-Lib `SMA`)."""

    kind: ClassVar[str] = "sma"

    def __init__(self, period: int = 20) -> None:
        self.period = _check_period(period)
        self.window: deque[float] = deque(maxlen=period)

    def update(self, value: float) -> float | None:
        self.window.append(float(value))
        if len(self.window) < self.period:
            return None
        return _mean(self.window)

    def to_dict(self) -> State:
        return {"kind": self.kind, "period": self.period, "window": list(self.window)}

    @classmethod
    def from_dict(cls, state: State) -> SimpleMovingAverage:
        _expect_kind(state, cls.kind)
        indicator = cls(int(state["period"]))
        indicator.window.extend(float(value) for value in state["window"])
        return indicator


class ExponentialMovingAverage:
    """TA-Lib `EMA`: seeded with the SMA of the first `period` values, `k = 2/(period+1)`."""

    kind: ClassVar[str] = "ema"

    def __init__(self, period: int) -> None:
        self.period = _check_period(period)
        self.k = 2.0 / (period + 1)
        self.seed: list[float] = []
        self.value: float | None = None

    def seed_with(self, value: float) -> None:
        """Start the average at `value` (MACD seeds its fast EMA from another window)."""
        self.seed = []
        self.value = value

    def update(self, value: float) -> float | None:
        if self.value is None:
            self.seed.append(float(value))
            if len(self.seed) < self.period:
                return None
            self.seed_with(_mean(self.seed))
            return self.value
        # TA-Lib's operation order, so the two agree to the last bits.
        self.value = (float(value) - self.value) * self.k + self.value
        return self.value

    def to_dict(self) -> State:
        # Copies: the state dict outlives this call and must not change with the indicator.
        return {
            "kind": self.kind,
            "period": self.period,
            "seed": list(self.seed),
            "value": self.value,
        }

    @classmethod
    def from_dict(cls, state: State) -> ExponentialMovingAverage:
        _expect_kind(state, cls.kind)
        indicator = cls(int(state["period"]))
        indicator.seed = [float(value) for value in state["seed"]]
        indicator.value = None if state["value"] is None else float(state["value"])
        return indicator


class RelativeStrengthIndex:
    """TA-Lib `RSI` (Wilder smoothing, classic not Metastock start)."""

    kind: ClassVar[str] = "rsi"

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period(period, minimum=2)
        self.previous: float | None = None
        self.changes = 0
        self.gain = 0.0  # a sum while warming up, then Wilder's average
        self.loss = 0.0

    def update(self, value: float) -> float | None:
        value = float(value)
        previous, self.previous = self.previous, value
        if previous is None:
            return None
        change = value - previous
        if self.changes >= self.period:
            self.loss *= self.period - 1
            self.gain *= self.period - 1
        if change < 0.0:
            self.loss -= change
        else:
            self.gain += change
        self.changes += 1
        if self.changes < self.period:
            return None
        self.loss /= self.period
        self.gain /= self.period
        total = self.gain + self.loss
        # TA-Lib answers 0 (not 50) for a series without any change.
        return 100.0 * (self.gain / total) if total != 0.0 else 0.0

    def to_dict(self) -> State:
        return {
            "kind": self.kind,
            "period": self.period,
            "previous": self.previous,
            "changes": self.changes,
            "gain": self.gain,
            "loss": self.loss,
        }

    @classmethod
    def from_dict(cls, state: State) -> RelativeStrengthIndex:
        _expect_kind(state, cls.kind)
        indicator = cls(int(state["period"]))
        indicator.previous = None if state["previous"] is None else float(state["previous"])
        indicator.changes = int(state["changes"])
        indicator.gain = float(state["gain"])
        indicator.loss = float(state["loss"])
        return indicator


class AverageTrueRange:
    """TA-Lib `ATR`: Wilder average of the true range, seeded with its simple mean."""

    kind: ClassVar[str] = "atr"

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period(period)
        self.previous_close: float | None = None
        self.ranges: list[float] = []
        self.value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        previous, self.previous_close = self.previous_close, float(close)
        if previous is None:
            return None
        true_range = max(high - low, abs(previous - high), abs(previous - low))
        if self.value is None:
            self.ranges.append(true_range)
            if len(self.ranges) < self.period:
                return None
            self.value = _mean(self.ranges)
            self.ranges = []
            return self.value
        self.value = (self.value * (self.period - 1) + true_range) / self.period
        return self.value

    def to_dict(self) -> State:
        return {
            "kind": self.kind,
            "period": self.period,
            "previous_close": self.previous_close,
            "ranges": list(self.ranges),  # a copy, like every list in the state
            "value": self.value,
        }

    @classmethod
    def from_dict(cls, state: State) -> AverageTrueRange:
        _expect_kind(state, cls.kind)
        indicator = cls(int(state["period"]))
        previous = state["previous_close"]
        indicator.previous_close = None if previous is None else float(previous)
        indicator.ranges = [float(value) for value in state["ranges"]]
        indicator.value = None if state["value"] is None else float(state["value"])
        return indicator


class BollingerBands:
    """TA-Lib `BBANDS` with an SMA middle band and population standard deviations."""

    kind: ClassVar[str] = "bbands"

    def __init__(self, period: int = 20, deviations: float = 2.0) -> None:
        self.period = _check_period(period)
        self.deviations = float(deviations)
        self.window: deque[float] = deque(maxlen=period)

    def update(self, value: float) -> tuple[float, float, float] | None:
        """(upper, middle, lower) once `period` values are in."""
        self.window.append(float(value))
        if len(self.window) < self.period:
            return None
        middle = _mean(self.window)
        width = population_stdev(self.window, middle) * self.deviations
        return middle + width, middle, middle - width

    def to_dict(self) -> State:
        return {
            "kind": self.kind,
            "period": self.period,
            "deviations": self.deviations,
            "window": list(self.window),
        }

    @classmethod
    def from_dict(cls, state: State) -> BollingerBands:
        _expect_kind(state, cls.kind)
        indicator = cls(int(state["period"]), float(state["deviations"]))
        indicator.window.extend(float(value) for value in state["window"])
        return indicator


class MovingAverageConvergenceDivergence:
    """TA-Lib `MACD` (fast 12, slow 26, signal 9) with its EMA alignment, see module doc."""

    kind: ClassVar[str] = "macd"

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self.fast = ExponentialMovingAverage(fast)
        self.slow = ExponentialMovingAverage(slow)
        self.signal = ExponentialMovingAverage(signal)
        if fast >= slow:
            raise ValueError(f"MACD fast period {fast} must be below slow period {slow}")

    def update(self, value: float) -> tuple[float, float, float] | None:
        """(macd, signal, histogram) once the signal line is seeded."""
        value = float(value)
        if self.slow.value is None:
            closes = [*self.slow.seed, value]
            slow = self.slow.update(value)
            if slow is None:
                return None
            # TA-Lib's alignment: the fast EMA starts where the slow one does, seeded
            # with the mean of the last `fast` closes of the slow seed window.
            self.fast.seed_with(_mean(closes[-self.fast.period :]))
            fast = self.fast.value
        else:
            slow = self.slow.update(value)
            fast = self.fast.update(value)
        assert slow is not None and fast is not None
        line = fast - slow
        signal = self.signal.update(line)
        if signal is None:
            return None
        return line, signal, line - signal

    def to_dict(self) -> State:
        return {
            "kind": self.kind,
            "fast": self.fast.to_dict(),
            "slow": self.slow.to_dict(),
            "signal": self.signal.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: State) -> MovingAverageConvergenceDivergence:
        _expect_kind(state, cls.kind)
        fast = ExponentialMovingAverage.from_dict(state["fast"])
        slow = ExponentialMovingAverage.from_dict(state["slow"])
        signal = ExponentialMovingAverage.from_dict(state["signal"])
        indicator = cls(fast.period, slow.period, signal.period)
        indicator.fast, indicator.slow, indicator.signal = fast, slow, signal
        return indicator


class RealizedVolatility:
    """Population standard deviation of the last `period` log returns of close.

    Not annualized: the value is per candle interval.
    """

    kind: ClassVar[str] = "realized_vol"

    def __init__(self, period: int = 30) -> None:
        self.period = _check_period(period)
        self.previous_close: float | None = None
        self.returns: deque[float] = deque(maxlen=period)

    def update(self, close: float) -> float | None:
        close = float(close)
        previous, self.previous_close = self.previous_close, close
        if previous is None:
            return None
        self.returns.append(math.log(close / previous))
        if len(self.returns) < self.period:
            return None
        return population_stdev(self.returns)

    def to_dict(self) -> State:
        return {
            "kind": self.kind,
            "period": self.period,
            "previous_close": self.previous_close,
            "returns": list(self.returns),
        }

    @classmethod
    def from_dict(cls, state: State) -> RealizedVolatility:
        _expect_kind(state, cls.kind)
        indicator = cls(int(state["period"]))
        previous = state["previous_close"]
        indicator.previous_close = None if previous is None else float(previous)
        indicator.returns.extend(float(value) for value in state["returns"])
        return indicator


class IndicatorSet:
    """Every canonical indicator of one (exchange, symbol, interval) candle series.

    Feed closed candles in open-time order; `update()` returns the canonical names
    that are warmed up. State version 1 is what `to_dict()` writes.
    """

    STATE_VERSION: ClassVar[int] = 1

    def __init__(self) -> None:
        self.sma_20 = SimpleMovingAverage(20)
        self.ema_12 = ExponentialMovingAverage(12)
        self.ema_26 = ExponentialMovingAverage(26)
        self.rsi_14 = RelativeStrengthIndex(14)
        self.macd = MovingAverageConvergenceDivergence(12, 26, 9)
        self.bbands = BollingerBands(20, 2.0)
        self.atr_14 = AverageTrueRange(14)
        self.realized_vol_30 = RealizedVolatility(30)

    @staticmethod
    def check_candle(
        open: float, high: float, low: float, close: float, volume: float, vwap: float
    ) -> None:
        """Raise `IndicatorInputError` for a candle that would poison the state."""
        values = {"open": open, "high": high, "low": low, "close": close, "vwap": vwap}
        for name, value in values.items():
            if not (math.isfinite(value) and value > 0.0):
                raise IndicatorInputError(f"candle {name} must be a positive number, got {value}")
        if not (math.isfinite(volume) and volume >= 0.0):
            raise IndicatorInputError(f"candle volume must be >= 0, got {volume}")
        if high < low:
            raise IndicatorInputError(f"candle high {high} is below its low {low}")

    def update(
        self,
        *,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        vwap: float,
    ) -> dict[str, float]:
        """Take one closed candle; return the warmed-up indicators in canonical order."""
        self.check_candle(open, high, low, close, volume, vwap)
        out: dict[str, float] = {}
        sma = self.sma_20.update(close)
        ema_12 = self.ema_12.update(close)
        ema_26 = self.ema_26.update(close)
        rsi = self.rsi_14.update(close)
        macd = self.macd.update(close)
        bands = self.bbands.update(close)
        atr = self.atr_14.update(high, low, close)
        volatility = self.realized_vol_30.update(close)
        if sma is not None:
            out["sma_20"] = sma
        if ema_12 is not None:
            out["ema_12"] = ema_12
        if ema_26 is not None:
            out["ema_26"] = ema_26
        if rsi is not None:
            out["rsi_14"] = rsi
        if macd is not None:
            out["macd"], out["macd_signal"], out["macd_hist"] = macd
        if bands is not None:
            out["bb_upper"], out["bb_middle"], out["bb_lower"] = bands
        if atr is not None:
            out["atr_14"] = atr
        if volatility is not None:
            out["realized_vol_30"] = volatility
        out["vwap"] = float(vwap)
        return out

    def to_dict(self) -> State:
        return {
            "version": self.STATE_VERSION,
            "sma_20": self.sma_20.to_dict(),
            "ema_12": self.ema_12.to_dict(),
            "ema_26": self.ema_26.to_dict(),
            "rsi_14": self.rsi_14.to_dict(),
            "macd": self.macd.to_dict(),
            "bbands": self.bbands.to_dict(),
            "atr_14": self.atr_14.to_dict(),
            "realized_vol_30": self.realized_vol_30.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: State) -> IndicatorSet:
        if state.get("version") != cls.STATE_VERSION:
            raise IndicatorStateError(
                f"indicator state version {state.get('version')!r} is not {cls.STATE_VERSION}"
            )
        indicators = cls()
        try:
            indicators.sma_20 = SimpleMovingAverage.from_dict(state["sma_20"])
            indicators.ema_12 = ExponentialMovingAverage.from_dict(state["ema_12"])
            indicators.ema_26 = ExponentialMovingAverage.from_dict(state["ema_26"])
            indicators.rsi_14 = RelativeStrengthIndex.from_dict(state["rsi_14"])
            indicators.macd = MovingAverageConvergenceDivergence.from_dict(state["macd"])
            indicators.bbands = BollingerBands.from_dict(state["bbands"])
            indicators.atr_14 = AverageTrueRange.from_dict(state["atr_14"])
            indicators.realized_vol_30 = RealizedVolatility.from_dict(state["realized_vol_30"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndicatorStateError(f"indicator state cannot be read: {exc!r}") from exc
        return indicators
