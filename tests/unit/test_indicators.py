"""Streaming indicators against TA-Lib, the independent reference.

Every comparison checks, per canonical name, that our value is None exactly where TA-Lib
gives NaN and that the values agree to 1e-9 relative, plus an absolute allowance of
1e-12 of the input magnitude for values near zero (MACD lines, flat-series bands) whose
rounding error scales with the prices they are computed from, not with themselves.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.indicators import (
    INDICATOR_NAMES,
    AverageTrueRange,
    BollingerBands,
    ExponentialMovingAverage,
    IndicatorInputError,
    IndicatorSet,
    IndicatorStateError,
    MovingAverageConvergenceDivergence,
    RealizedVolatility,
    RelativeStrengthIndex,
    SimpleMovingAverage,
    population_stdev,
)

RELATIVE = 1e-9
ABSOLUTE_OF_SCALE = 1e-12

FIRST_VALUE_AT = {
    "sma_20": 19,
    "ema_12": 11,
    "ema_26": 25,
    "rsi_14": 14,
    "macd": 33,
    "macd_signal": 33,
    "macd_hist": 33,
    "bb_upper": 19,
    "bb_middle": 19,
    "bb_lower": 19,
    "atr_14": 14,
    "realized_vol_30": 30,
    "vwap": 0,
}


class Series:
    """OHLCV + vwap columns of one candle series."""

    def __init__(self, close: np.ndarray, high: np.ndarray, low: np.ndarray) -> None:
        self.close = close.astype(np.float64)
        self.high = high.astype(np.float64)
        self.low = low.astype(np.float64)
        self.open = np.concatenate((self.close[:1], self.close[:-1]))
        self.volume = np.ones_like(self.close)
        self.vwap = (self.high + self.low + self.close) / 3.0

    def __len__(self) -> int:
        return len(self.close)

    def candle(self, index: int) -> dict[str, float]:
        return {
            "open": float(self.open[index]),
            "high": float(self.high[index]),
            "low": float(self.low[index]),
            "close": float(self.close[index]),
            "volume": float(self.volume[index]),
            "vwap": float(self.vwap[index]),
        }


def random_walk(length: int, seed: int) -> Series:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, length)))
    high = close * (1.0 + np.abs(rng.normal(0.0, 0.005, length)))
    low = close * (1.0 - np.abs(rng.normal(0.0, 0.005, length)))
    return Series(close, high, low)


def talib_reference(series: Series) -> dict[str, np.ndarray]:
    close = series.close
    macd, signal, hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    upper, middle, lower = talib.BBANDS(
        close, timeperiod=20, nbdevup=2, nbdevdn=2, matype=talib.MA_Type.SMA
    )
    log_returns = np.log(talib.ROCR(close, timeperiod=1))
    return {
        "sma_20": talib.SMA(close, timeperiod=20),
        "ema_12": talib.EMA(close, timeperiod=12),
        "ema_26": talib.EMA(close, timeperiod=26),
        "rsi_14": talib.RSI(close, timeperiod=14),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
        "atr_14": talib.ATR(series.high, series.low, close, timeperiod=14),
        # ROCR's leading NaN is skipped by the wrapper: population STDDEV of 30 returns.
        "realized_vol_30": talib.STDDEV(log_returns, timeperiod=30, nbdev=1),
        "vwap": series.vwap,
    }


def input_scale(series: Series) -> dict[str, np.ndarray]:
    """Magnitude of the inputs seen up to each index, in each indicator's unit."""
    price = np.maximum.accumulate(np.abs(series.high))
    returns = np.abs(np.diff(np.log(series.close), prepend=math.log(series.close[0])))
    volatility = np.maximum.accumulate(returns)
    scales = dict.fromkeys(INDICATOR_NAMES, price)
    scales["rsi_14"] = np.full(len(series), 100.0)
    scales["realized_vol_30"] = volatility
    return scales


def run(indicators: IndicatorSet, series: Series, start: int = 0) -> list[dict[str, float]]:
    return [indicators.update(**series.candle(index)) for index in range(start, len(series))]


def column(outputs: list[dict[str, float]], name: str) -> np.ndarray:
    return np.array([output.get(name, np.nan) for output in outputs], dtype=np.float64)


def relative_errors(series: Series, outputs: list[dict[str, float]]) -> dict[str, float]:
    """Assert the TA-Lib match for every name; return the max relative error of each."""
    reference = talib_reference(series)
    scales = input_scale(series)
    worst: dict[str, float] = {}
    for name in INDICATOR_NAMES:
        ours, theirs = column(outputs, name), reference[name]
        assert np.array_equal(np.isnan(ours), np.isnan(theirs)), (
            f"{name}: warm-up differs, ours starts at {np.argmax(~np.isnan(ours))}, "
            f"TA-Lib at {np.argmax(~np.isnan(theirs))}"
        )
        valid = ~np.isnan(theirs)
        difference = np.abs(ours[valid] - theirs[valid])
        allowed = RELATIVE * np.abs(theirs[valid]) + ABSOLUTE_OF_SCALE * scales[name][valid]
        bad = np.flatnonzero(difference > allowed)
        assert bad.size == 0, (
            f"{name}: at index {np.flatnonzero(valid)[bad[0]]} ours {ours[valid][bad[0]]!r} "
            f"vs TA-Lib {theirs[valid][bad[0]]!r}"
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(difference == 0.0, 0.0, difference / np.abs(theirs[valid]))
        worst[name] = float(relative.max()) if relative.size else 0.0
    return worst


def test_every_indicator_matches_talib_on_a_2000_candle_random_walk() -> None:
    series = random_walk(2_000, seed=20_240_601)
    worst = relative_errors(series, run(IndicatorSet(), series))
    # Far tighter than the 1e-9 contract on ordinary data: say so, so a drift shows.
    assert max(worst.values()) < 1e-12, worst


@pytest.mark.parametrize("name", INDICATOR_NAMES)
def test_each_indicator_warms_up_on_the_candle_talib_starts(name: str) -> None:
    series = random_walk(60, seed=7)
    reference = talib_reference(series)[name]
    ours = column(run(IndicatorSet(), series), name)
    assert int(np.argmax(~np.isnan(reference))) == FIRST_VALUE_AT[name]
    assert int(np.argmax(~np.isnan(ours))) == FIRST_VALUE_AT[name]
    assert np.isnan(ours[: FIRST_VALUE_AT[name]]).all()
    assert not np.isnan(ours[FIRST_VALUE_AT[name] :]).any()


@st.composite
def short_series(draw: st.DrawFn) -> Series:
    """Up to 120 candles: random scale, flat stretches, jumps, wide and zero ranges."""
    length = draw(st.integers(min_value=1, max_value=120))
    scale = draw(st.sampled_from([1e-6, 0.01, 1.0, 37.5, 100.0, 65_000.0, 1e8]))
    step = st.one_of(st.just(0.0), st.floats(min_value=-0.05, max_value=0.05))
    returns = draw(st.lists(step, min_size=length, max_size=length))
    spread = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.05))
    up = draw(st.lists(spread, min_size=length, max_size=length))
    down = draw(st.lists(spread, min_size=length, max_size=length))
    close = scale * np.exp(np.cumsum(returns))
    return Series(close, close * (1.0 + np.array(up)), close * (1.0 - np.array(down)))


@settings(max_examples=300, deadline=None)
@given(series=short_series())
def test_every_indicator_matches_talib_on_generated_short_series(series: Series) -> None:
    relative_errors(series, run(IndicatorSet(), series))


def test_macd_seeds_its_fast_ema_where_the_slow_one_starts_unlike_ema_12() -> None:
    series = random_walk(80, seed=3)
    close = series.close
    outputs = run(IndicatorSet(), series)
    k_fast, k_slow = 2.0 / 13.0, 2.0 / 27.0
    fast, slow = float(np.mean(close[14:26])), float(np.mean(close[:26]))
    lines = [fast - slow]
    for value in close[26:34]:
        fast = (value - fast) * k_fast + fast
        slow = (value - slow) * k_slow + slow
        lines.append(fast - slow)
    assert outputs[33]["macd"] == pytest.approx(lines[-1], rel=1e-12)
    assert outputs[33]["macd_signal"] == pytest.approx(float(np.mean(lines)), rel=1e-12)
    stand_alone = outputs[33]["ema_12"] - outputs[33]["ema_26"]
    assert abs(stand_alone - outputs[33]["macd"]) > 1e-6


def test_rsi_of_a_flat_series_is_zero_like_talib() -> None:
    series = Series(np.full(20, 5.0), np.full(20, 5.0), np.full(20, 5.0))
    outputs = run(IndicatorSet(), series)
    assert [output["rsi_14"] for output in outputs[14:]] == [0.0] * 6
    assert talib.RSI(series.close, timeperiod=14)[14] == 0.0


def test_rolling_stdev_is_exact_where_running_sums_of_squares_cancel() -> None:
    rng = np.random.default_rng(11)
    close = 1e8 + rng.normal(0.0, 1e-4, 40)
    for index in range(19, 40):
        window = list(close[index - 19 : index + 1])
        exact = float(np.std(np.array(window, dtype=np.longdouble) - np.longdouble(1e8)))
        assert population_stdev(window) == pytest.approx(exact, rel=1e-9)
    series = Series(close, close, close)
    relative_errors(series, run(IndicatorSet(), series))  # bands still agree with TA-Lib


def test_realized_volatility_is_the_population_stdev_of_log_returns_not_annualized() -> None:
    series = random_walk(45, seed=5)
    outputs = run(IndicatorSet(), series)
    returns = np.diff(np.log(series.close))
    for index in range(30, 45):
        expected = float(np.std(returns[index - 30 : index], ddof=0))
        assert outputs[index]["realized_vol_30"] == pytest.approx(expected, rel=1e-12)


def test_vwap_is_the_candles_own_vwap_from_the_first_candle() -> None:
    series = random_walk(5, seed=1)
    outputs = run(IndicatorSet(), series)
    assert [output["vwap"] for output in outputs] == list(series.vwap)
    assert list(outputs[0]) == ["vwap"]


@pytest.mark.parametrize("split", [0, 1, 11, 14, 19, 25, 26, 30, 33, 34, 500])
def test_state_round_trips_through_json_mid_series_and_continues_identically(
    split: int,
) -> None:
    series = random_walk(600, seed=99)
    uninterrupted = run(IndicatorSet(), series)
    first = IndicatorSet()
    head = run(first, Series(series.close[:split], series.high[:split], series.low[:split]))
    restored = IndicatorSet.from_dict(json.loads(json.dumps(first.to_dict())))
    tail = [restored.update(**series.candle(index)) for index in range(split, len(series))]
    assert head + tail == uninterrupted
    assert restored.to_dict() == json.loads(json.dumps(restored.to_dict()))


SINGLE_INDICATORS: list[tuple[Any, Any]] = [
    (SimpleMovingAverage, lambda i, s: i.update(s.close)),
    (lambda: ExponentialMovingAverage(12), lambda i, s: i.update(s.close)),
    (RelativeStrengthIndex, lambda i, s: i.update(s.close)),
    (AverageTrueRange, lambda i, s: i.update(s.high, s.low, s.close)),
    (BollingerBands, lambda i, s: i.update(s.close)),
    (MovingAverageConvergenceDivergence, lambda i, s: i.update(s.close)),
    (RealizedVolatility, lambda i, s: i.update(s.close)),
]


class Candle:
    def __init__(self, high: float, low: float, close: float) -> None:
        self.high, self.low, self.close = high, low, close


@pytest.mark.parametrize(("make", "step"), SINGLE_INDICATORS)
def test_each_indicator_continues_identically_after_a_json_state_round_trip(
    make: Any, step: Any
) -> None:
    series = random_walk(120, seed=42)
    candles = [
        Candle(*values) for values in zip(series.high, series.low, series.close, strict=True)
    ]
    for split in (0, 5, 17, 40):
        uninterrupted = make()
        expected = [step(uninterrupted, candle) for candle in candles]
        first = make()
        head = [step(first, candle) for candle in candles[:split]]
        restored = type(first).from_dict(json.loads(json.dumps(first.to_dict())))
        assert head + [step(restored, candle) for candle in candles[split:]] == expected


def test_a_bad_candle_is_refused_before_any_state_changes() -> None:
    series = random_walk(40, seed=8)
    indicators = IndicatorSet()
    run(indicators, series)
    before = indicators.to_dict()
    good = series.candle(0)
    for field, value in [("close", math.nan), ("high", math.inf), ("low", 0.0), ("vwap", -1.0)]:
        with pytest.raises(IndicatorInputError, match=field):
            indicators.update(**{**good, field: value})
    with pytest.raises(IndicatorInputError, match="below its low"):
        indicators.update(**{**good, "high": 1.0, "low": 2.0})
    assert indicators.to_dict() == before


def test_state_of_another_version_or_shape_is_refused() -> None:
    state = IndicatorSet().to_dict()
    with pytest.raises(IndicatorStateError, match="version"):
        IndicatorSet.from_dict({**state, "version": 2})
    with pytest.raises(IndicatorStateError, match="cannot be read"):
        IndicatorSet.from_dict({**state, "rsi_14": {"kind": "rsi"}})
    with pytest.raises(IndicatorStateError, match="not a 'ema'"):
        IndicatorSet.from_dict({**state, "ema_12": state["sma_20"]})
