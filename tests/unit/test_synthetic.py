"""Synthetic trades rebuild the candles they were drawn from (ingest.synthetic)."""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import synthetic
from ingest.exceptions import InvalidCandleError
from ingest.sample_data import HOUR_MS, RealCandle
from ingest.synthetic import (
    VOLUME_RELATIVE_TOLERANCE,
    synthetic_trade_batches,
    synthetic_trades,
    trade_column_batches,
    trade_columns_from_candles,
    trades_from_candles,
)
from schemas.codec import codec_for
from schemas.events import Trade

START = 1_500_000_000_000 // HOUR_MS * HOUR_MS


def random_candles(count: int, seed: int, *, zero_volume_every: int = 0) -> list[RealCandle]:
    """Plausible BTC-like candles on a cent grid, with a few degenerate shapes mixed in."""
    rng = np.random.default_rng(seed)
    candles = []
    price = 5000.0
    for index in range(count):
        open_ = round(price, 2)
        close = round(open_ * math.exp(rng.normal(0, 0.01)), 2)
        high = round(max(open_, close) * (1 + abs(rng.normal(0, 0.005))), 2)
        low = round(min(open_, close) * (1 - abs(rng.normal(0, 0.005))), 2)
        volume = round(float(rng.lognormal(5, 1)), 8)
        shape = index % 7
        if shape == 1:
            high = max(open_, close)  # no upper wick: the high is the open or the close
        elif shape == 2:
            low = min(open_, close)  # no lower wick
        elif shape == 3:
            open_ = high = low = close  # flat candle with volume
        if zero_volume_every and index % zero_volume_every == 0:
            open_ = high = low = close
            volume = 0.0
        candles.append(RealCandle(START + index * HOUR_MS, open_, high, low, close, volume))
        price = close
    return candles


def rebuilt(columns: dict[str, np.ndarray], width: int = HOUR_MS) -> dict[int, dict[str, float]]:
    """OHLCV per window from trades in time order, by plain Python (the reference)."""
    windows: dict[int, dict[str, float]] = {}
    sums: dict[int, list[float]] = defaultdict(list)
    for ts, price, size in zip(
        columns["ts"].tolist(), columns["price"].tolist(), columns["size"].tolist(), strict=True
    ):
        start = ts - ts % width
        window = windows.setdefault(start, {"open": price, "high": price, "low": price})
        window["high"] = max(window["high"], price)
        window["low"] = min(window["low"], price)
        window["close"] = price
        sums[start].append(size)
    for start, sizes in sums.items():
        windows[start]["volume"] = math.fsum(sizes)
        windows[start]["min_size"] = min(sizes)
    return windows


def assert_rebuilds(candles: list[RealCandle], columns: dict[str, np.ndarray], n: int) -> None:
    windows = rebuilt(columns)
    traded = [candle for candle in candles if candle.volume > 0]
    assert sorted(windows) == [candle.open_time for candle in traded]
    for candle in traded:
        window = windows[candle.open_time]
        assert (window["open"], window["high"], window["low"], window["close"]) == (
            candle.open,
            candle.high,
            candle.low,
            candle.close,
        )
        assert math.isclose(window["volume"], candle.volume, rel_tol=VOLUME_RELATIVE_TOLERANCE)
        assert window["min_size"] > 0
    assert len(columns["price"]) == n * len(traded)
    assert (np.diff(columns["ts"]) >= 0).all()
    assert (columns["received_ts"] - columns["ts"] >= 0).all()


def test_trades_rebuild_every_real_looking_candle_exactly() -> None:
    candles = random_candles(500, seed=1, zero_volume_every=37)
    columns = trade_columns_from_candles(candles, trades_per_candle=50, seed=11)
    assert_rebuilds(candles, columns, 50)


def test_trades_stay_inside_their_candle_window_and_range() -> None:
    candles = random_candles(200, seed=2)
    columns = trade_columns_from_candles(candles, trades_per_candle=30, seed=3)
    window = (columns["ts"] - START) // HOUR_MS
    highs = np.array([c.high for c in candles])[window]
    lows = np.array([c.low for c in candles])[window]
    assert ((columns["price"] <= highs) & (columns["price"] >= lows)).all()
    first_ts = columns["ts"].reshape(-1, 30)[:, 0]
    last_ts = columns["ts"].reshape(-1, 30)[:, -1]
    opens = np.array([c.open_time for c in candles])
    assert (first_ts >= opens).all()
    assert (last_ts < opens + HOUR_MS).all()


candle_shapes = st.builds(
    lambda low, spread, at_open, at_close, volume: (low, spread, at_open, at_close, volume),
    st.floats(1e-4, 1e6),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(1e-6, 1e7),
)


def candle_from(index: int, shape: tuple[float, float, float, float, float]) -> RealCandle:
    low, spread, at_open, at_close, volume = shape
    high = low * (1 + spread)
    open_ = min(high, low + at_open * (high - low))
    close = min(high, low + at_close * (high - low))
    return RealCandle(START + index * HOUR_MS, open_, high, low, close, volume)


@settings(max_examples=200, deadline=None)
@given(
    shapes=st.lists(candle_shapes, min_size=1, max_size=12),
    trades_per_candle=st.integers(4, 80),
    seed=st.integers(0, 2**63),
)
def test_any_valid_candle_is_rebuilt_exactly(
    shapes: list[tuple[float, float, float, float, float]], trades_per_candle: int, seed: int
) -> None:
    candles = [candle_from(index, shape) for index, shape in enumerate(shapes)]
    columns = trade_columns_from_candles(candles, trades_per_candle=trades_per_candle, seed=seed)
    assert_rebuilds(candles, columns, trades_per_candle)


def test_same_seed_same_trades_and_other_seed_other_trades() -> None:
    candles = random_candles(100, seed=4)
    first = trade_columns_from_candles(candles, trades_per_candle=20, seed=99)
    again = trade_columns_from_candles(candles, trades_per_candle=20, seed=99)
    other = trade_columns_from_candles(candles, trades_per_candle=20, seed=100)
    for name in first:
        assert np.array_equal(first[name], again[name])
    assert not np.array_equal(first["price"], other["price"])
    assert not np.array_equal(first["ts"], other["ts"])


def test_blocks_continue_ids_and_time_across_block_boundaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(synthetic, "BLOCK_TRADES", 64)  # 3 candles of 20 trades per block
    candles = random_candles(10, seed=5)
    batches = list(trade_column_batches(candles, trades_per_candle=20, seed=1))
    assert len(batches) == 4
    columns = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    assert np.array_equal(columns["trade_id"], np.arange(1, 201))
    assert_rebuilds(candles, columns, 20)


def test_structs_are_valid_trades_with_sequential_string_ids() -> None:
    candles = random_candles(40, seed=6, zero_volume_every=9)
    trades = list(
        trades_from_candles(
            candles, exchange="coinbase", symbol="BTC-USD", trades_per_candle=8, seed=2,
            received_lag_ms=40, first_trade_id=1000,
        )
    )  # fmt: skip
    codec = codec_for(Trade)
    assert [trade.trade_id for trade in trades] == [str(1000 + i) for i in range(len(trades))]
    assert {trade.side for trade in trades} == {"buy", "sell"}
    for trade in trades:
        assert codec.decode(codec.encode(trade)) == trade
        assert trade.received_ts == trade.ts + 40
    assert [t.ts for t in trades] == sorted(t.ts for t in trades)


def test_struct_prices_match_the_columns() -> None:
    candles = random_candles(5, seed=7)
    columns = trade_columns_from_candles(candles, trades_per_candle=10, seed=8)
    trades = list(trades_from_candles(candles, trades_per_candle=10, seed=8))
    assert [t.price for t in trades] == columns["price"].tolist()
    assert [t.side == "buy" for t in trades] == columns["is_buy"].tolist()


def test_price_decimals_keep_prices_on_the_cent_grid() -> None:
    candles = random_candles(100, seed=8)
    columns = trade_columns_from_candles(candles, trades_per_candle=25, seed=5, price_decimals=2)
    assert (np.round(columns["price"], 2) == columns["price"]).all()
    assert_rebuilds(candles, columns, 25)


def test_side_follows_the_tick_rule() -> None:
    columns = trade_columns_from_candles(random_candles(50, seed=9), trades_per_candle=40, seed=1)
    price = columns["price"].reshape(-1, 40)
    is_buy = columns["is_buy"].reshape(-1, 40)
    move = np.diff(price, axis=1)
    assert is_buy[:, 1:][move > 0].all()
    assert not is_buy[:, 1:][move < 0].any()


def test_zero_volume_candles_and_no_candles_give_no_trades() -> None:
    flat = RealCandle(START, 10.0, 10.0, 10.0, 10.0, 0.0)
    assert len(trade_columns_from_candles([flat], trades_per_candle=5, seed=1)["price"]) == 0
    assert list(trades_from_candles([], trades_per_candle=5, seed=1)) == []


@pytest.mark.parametrize(
    ("candle", "reason"),
    [
        (RealCandle(START, 10, 11, 9, 12, 1), "enclose"),
        (RealCandle(START, 10, 11, 9.5, 9, 1), "enclose"),
        (RealCandle(START, 10, 11, 0, 10, 1), "low must be > 0"),
        (RealCandle(START, 10, 11, 9, 10, -1), "volume >= 0"),
        (RealCandle(START, 10, math.inf, 9, 10, 1), "finite"),
    ],
)
def test_impossible_candles_are_refused(candle: RealCandle, reason: str) -> None:
    with pytest.raises(InvalidCandleError, match=reason) as caught:
        trade_columns_from_candles([candle], trades_per_candle=5, seed=1)
    assert caught.value.open_time == START


def test_unsorted_or_overlapping_candles_are_refused() -> None:
    first, second = random_candles(2, seed=10)
    with pytest.raises(InvalidCandleError, match="sort and dedupe"):
        trade_columns_from_candles([second, first], trades_per_candle=5, seed=1)
    with pytest.raises(InvalidCandleError, match="sort and dedupe"):
        trade_columns_from_candles([first, first], trades_per_candle=5, seed=1)


def test_too_few_trades_per_candle_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match=">= 4"):
        trade_columns_from_candles(random_candles(1, seed=1), trades_per_candle=3, seed=1)


def test_invalid_symbol_is_refused_before_any_trade() -> None:
    from schemas.exceptions import SchemaError

    with pytest.raises(SchemaError, match="symbol"):
        next(
            trades_from_candles(
                random_candles(1, seed=1), symbol="BTCUSD", trades_per_candle=4, seed=1
            )
        )


def test_random_walk_is_seeded_sorted_and_numbers_ids_per_symbol() -> None:
    symbols = {"BTC-USD": 60_000.0, "ETH-USD": 3_000.0, "SOL-USD": 150.0}
    kwargs = dict(symbols=symbols, count=5_000, trades_per_second=500.0, seed=3, start_ts=START)
    batches = list(synthetic_trade_batches(**kwargs))  # type: ignore[arg-type]
    again = list(synthetic_trade_batches(**kwargs))  # type: ignore[arg-type]
    assert all(np.array_equal(a["price"], b["price"]) for a, b in zip(batches, again, strict=True))
    columns = batches[0]
    assert len(columns["price"]) == 5_000
    assert (np.diff(columns["ts"]) >= 0).all() and columns["ts"][0] >= START
    # ~500 trades/s over 5,000 trades is ~10 s of event time.
    assert 8_000 < columns["ts"][-1] - START < 12_000
    for symbol, start in symbols.items():
        mine = columns["symbol"] == symbol
        assert np.array_equal(columns["trade_id"][mine], np.arange(1, mine.sum() + 1))
        assert 0.8 * start < columns["price"][mine][0] < 1.2 * start
    assert (columns["price"] > 0).all() and (columns["size"] > 0).all()


def test_random_walk_carries_state_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "BLOCK_TRADES", 100)
    trades = list(
        synthetic_trades(symbols={"BTC-USD": 100.0}, count=250, trades_per_second=10.0, seed=1,
                         start_ts=START)
    )  # fmt: skip
    assert [t.trade_id for t in trades] == [str(i) for i in range(1, 251)]
    assert all(a.ts <= b.ts for a, b in pairwise(trades))
    steps = [abs(math.log(b.price / a.price)) for a, b in pairwise(trades)]
    assert max(steps) < 0.01  # no jump back to the start price at a block boundary
    codec = codec_for(Trade)
    assert all(codec.decode(codec.encode(trade)) == trade for trade in trades)
