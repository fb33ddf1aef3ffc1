"""Seeded synthetic trades: inside real candles, or a free random walk for load tests.

`trade_columns_from_candles()` turns real OHLCV candles (see `ingest.sample_data`) into
trades whose candle rebuilds the real one: per candle, the first trade prints the open,
the last the close, one trade prints exactly the high and one exactly the low, every
price lies in [low, high], sizes sum to the volume and timestamps fall inside the
candle. The price path is a piecewise Brownian bridge pinned at four anchors
(open, high/low at random interior trades, close), reflected into [low, high]; the
anchors are written last, so the extremes are exact rather than approximately hit.

Generation is numpy over blocks of candles (4-10M trades/s as columns); building msgspec
structs for `trades_from_candles()` costs more than generating them. The same seed,
arguments, candles and numpy version give the same trades: each block draws from its
own `default_rng([seed, block])` and blocks depend only on `trades_per_candle`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypedDict, Unpack

import msgspec
import numpy as np

from ingest.exceptions import InvalidCandleError
from ingest.sample_data import HOUR_MS, RealCandle
from schemas.codec import codec_for
from schemas.events import Trade

# Trades per generated block: big enough to amortize numpy calls, small enough that the
# ~12 temporary arrays of a block stay in tens of MB.
BLOCK_TRADES = 1 << 18
# Brownian-bridge noise, as a fraction of the candle range over sqrt(trades): enough to
# wander across the range, little enough that few excursions need reflecting.
BRIDGE_NOISE = 0.5
# A candle's summed sizes differ from its volume by float rounding only; measured on the
# real hourly series, summing in order: <= 1.2e-14 relative at 10,000 trades per candle.
VOLUME_RELATIVE_TOLERANCE = 1e-12


def trade_column_batches(
    candles: Sequence[RealCandle],
    *,
    trades_per_candle: int,
    seed: int,
    interval_ms: int = HOUR_MS,
    received_lag_ms: int = 25,
    first_trade_id: int = 1,
    price_decimals: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Trades inside `candles` as blocks of columns, oldest first.

    Columns: `ts`, `received_ts`, `trade_id` (int64), `price`, `size` (float64) and
    `is_buy` (bool, the taker side). Candles with zero volume get no trades, since a trade
    needs a positive size. `price_decimals` rounds prices (e.g. 2 for cents) before
    clipping, for candles whose prices are on that grid.
    """
    if trades_per_candle < 4:
        raise ValueError("trades_per_candle must be >= 4: open, high, low and close trades")
    if interval_ms < 1 or received_lag_ms < 0 or seed < 0:
        raise ValueError("interval_ms must be >= 1, received_lag_ms and seed >= 0")
    per_block = max(1, BLOCK_TRADES // trades_per_candle)
    next_id = first_trade_id
    previous_open: int | None = None
    for block, start in enumerate(range(0, len(candles), per_block)):
        open_time, ohlcv = _candle_table(
            candles[start : start + per_block], interval_ms, previous_open
        )
        previous_open = int(open_time[-1])
        rng = np.random.default_rng([seed, block])
        columns = _block_columns(
            open_time, ohlcv, trades_per_candle, interval_ms, rng, price_decimals
        )
        count = len(columns["price"])
        columns["trade_id"] = np.arange(next_id, next_id + count, dtype=np.int64)
        columns["received_ts"] = columns["ts"] + received_lag_ms
        next_id += count
        if count:
            yield columns


class SynthesisOptions(TypedDict, total=False):
    """Optional knobs of `trade_column_batches()`, forwarded by its wrappers."""

    interval_ms: int
    received_lag_ms: int
    first_trade_id: int
    price_decimals: int | None


def trade_columns_from_candles(
    candles: Sequence[RealCandle],
    *,
    trades_per_candle: int,
    seed: int,
    **options: Unpack[SynthesisOptions],
) -> dict[str, np.ndarray]:
    """All trades of `trade_column_batches()` in one set of columns."""
    batches = list(
        trade_column_batches(candles, trades_per_candle=trades_per_candle, seed=seed, **options)
    )
    if not batches:
        return _empty_columns()
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


def trades_from_candles(
    candles: Sequence[RealCandle],
    *,
    exchange: str = "coinbase",
    symbol: str = "BTC-USD",
    trades_per_candle: int,
    seed: int,
    **options: Unpack[SynthesisOptions],
) -> Iterator[msgspec.Struct]:
    """The trades of `trade_column_batches()` as `Trade` structs, in time order.

    Exchange and symbol are validated once through the codec; every other field meets
    the `Trade` constraints by construction, so structs are built without a JSON
    round trip per trade.
    """
    make = _checked_struct_factory(exchange, [symbol])
    for columns in trade_column_batches(
        candles, trades_per_candle=trades_per_candle, seed=seed, **options
    ):
        yield from _structs(make, exchange, [symbol] * len(columns["price"]), columns)


def synthetic_trade_batches(
    *,
    symbols: Mapping[str, float],
    count: int,
    trades_per_second: float,
    seed: int,
    start_ts: int,
    volatility: float = 2e-4,
    mean_size: float = 0.1,
    received_lag_ms: int = 25,
) -> Iterator[dict[str, np.ndarray]]:
    """`count` random-walk trades over several symbols, as blocks of columns.

    `symbols` maps each `BASE-QUOTE` symbol to its start price. Arrivals are a Poisson
    process of `trades_per_second` across all symbols, each trade picks a symbol
    uniformly, its log price moves by N(0, volatility) and its side follows that move.
    Columns are those of `trade_column_batches()` plus `symbol`; trade ids count up
    from 1 per symbol.
    """
    if count < 0 or trades_per_second <= 0 or volatility < 0 or mean_size <= 0 or seed < 0:
        raise ValueError("count, volatility and seed must be >= 0; rate and mean_size > 0")
    if not symbols or min(symbols.values()) <= 0:
        raise ValueError("give at least one symbol, each with a start price > 0")
    names = np.array(list(symbols))
    log_price = np.log(np.array(list(symbols.values()), dtype=np.float64))
    next_id = np.ones(len(names), dtype=np.int64)
    clock_ms = float(start_ts)
    for block, start in enumerate(range(0, count, BLOCK_TRADES)):
        size = min(BLOCK_TRADES, count - start)
        rng = np.random.default_rng([seed, block])
        times = clock_ms + np.cumsum(rng.exponential(1000.0 / trades_per_second, size))
        clock_ms = float(times[-1])
        which = rng.integers(0, len(names), size)
        moves = rng.normal(0.0, volatility, size)
        prices = np.empty(size)
        ids = np.empty(size, dtype=np.int64)
        for index in range(len(names)):
            mask = which == index
            path = log_price[index] + np.cumsum(moves[mask])
            prices[mask] = np.exp(path)
            ids[mask] = next_id[index] + np.arange(len(path))
            if len(path):
                log_price[index] = path[-1]
                next_id[index] += len(path)
        ts = np.floor(times).astype(np.int64)
        yield {
            "symbol": names[which],
            "ts": ts,
            "received_ts": ts + received_lag_ms,
            "trade_id": ids,
            "price": prices,
            # lognormal with mean 1, so `mean_size` is the mean size.
            "size": mean_size * rng.lognormal(-0.5, 1.0, size),
            "is_buy": moves >= 0,
        }


class RandomWalkOptions(TypedDict, total=False):
    """Optional knobs of `synthetic_trade_batches()`, forwarded by `synthetic_trades()`."""

    volatility: float
    mean_size: float
    received_lag_ms: int


def synthetic_trades(
    *,
    exchange: str = "synthetic",
    symbols: Mapping[str, float],
    count: int,
    trades_per_second: float,
    seed: int,
    start_ts: int,
    **options: Unpack[RandomWalkOptions],
) -> Iterator[msgspec.Struct]:
    """The trades of `synthetic_trade_batches()` as `Trade` structs."""
    make = _checked_struct_factory(exchange, list(symbols))
    for columns in synthetic_trade_batches(
        symbols=symbols,
        count=count,
        trades_per_second=trades_per_second,
        seed=seed,
        start_ts=start_ts,
        **options,
    ):
        yield from _structs(make, exchange, columns["symbol"].tolist(), columns)


def _candle_table(
    chunk: Sequence[RealCandle], interval_ms: int, previous: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(open_time, OHLCV) arrays of a block, refusing candles no trades can reproduce.

    Candles must be sorted and not overlap, or the trades would come out unsorted.
    """
    open_time = np.array([candle.open_time for candle in chunk], dtype=np.int64)
    ohlcv = np.array(
        [(c.open, c.high, c.low, c.close, c.volume) for c in chunk], dtype=np.float64
    ).reshape(-1, 5)
    open_, high, low, close, volume = ohlcv.T
    previous = int(open_time[0]) - interval_ms if previous is None else previous
    gaps = np.diff(open_time, prepend=previous)
    problems = (
        (~np.isfinite(ohlcv).all(axis=1), "OHLCV must be finite"),
        ((low <= 0) | (volume < 0), "low must be > 0 and volume >= 0"),
        ((high < np.maximum(open_, close)) | (low > np.minimum(open_, close)),
         "high and low must enclose open and close"),
        (open_time < 0, "open_time must be >= 0"),
        (gaps < interval_ms, "starts before the previous candle ends: sort and dedupe them"),
    )  # fmt: skip
    for bad, reason in problems:
        if bad.any():
            raise InvalidCandleError(reason, open_time=int(open_time[bad.argmax()]))
    return open_time, ohlcv


def _block_columns(
    open_time: np.ndarray,
    ohlcv: np.ndarray,
    n: int,
    interval_ms: int,
    rng: np.random.Generator,
    price_decimals: int | None,
) -> dict[str, np.ndarray]:
    """Prices, sizes, timestamps and sides for the candles of one block (m x n arrays)."""
    active = ohlcv[:, 4] > 0
    open_time = open_time[active]
    open_, high, low, close, volume = ohlcv[active].T
    m = len(open_time)
    rows = np.arange(m)

    # Two distinct interior trades print the high and the low, in random order.
    first = rng.integers(1, n - 1, m)
    second = rng.integers(1, n - 2, m)
    second += second >= first
    early, late = np.minimum(first, second), np.maximum(first, second)
    high_first = rng.random(m) < 0.5
    anchors = np.stack([np.zeros(m, np.int64), early, late, np.full(m, n - 1)], axis=1)
    anchor_prices = np.stack(
        [open_, np.where(high_first, high, low), np.where(high_first, low, high), close], axis=1
    )

    # Linear interpolation between anchors plus a Brownian motion minus its own
    # interpolation: independent Brownian bridges between consecutive anchors.
    steps = np.arange(n)
    segment = (steps >= early[:, None]).astype(np.int64) + (steps >= late[:, None])
    left = np.take_along_axis(anchors, segment, axis=1)
    right = np.take_along_axis(anchors, segment + 1, axis=1)
    fraction = (steps - left) / (right - left)
    # float32 is plenty for noise and twice as fast to draw.
    walk = np.cumsum(rng.standard_normal((m, n), dtype=np.float32), axis=1)
    walk_left = np.take_along_axis(walk, left, axis=1)
    walk_right = np.take_along_axis(walk, right, axis=1)
    bridge = walk - walk_left - fraction * (walk_right - walk_left)
    price_left = np.take_along_axis(anchor_prices, segment, axis=1)
    price_right = np.take_along_axis(anchor_prices, segment + 1, axis=1)
    noise = (BRIDGE_NOISE / math.sqrt(n)) * (high - low)
    price = price_left + fraction * (price_right - price_left) + noise[:, None] * bridge
    # Reflect excursions back inside (clipping alone would stack trades on the bounds),
    # then clip what a double excursion or rounding still leaves outside.
    high_2d, low_2d = high[:, None], low[:, None]
    price = np.where(price > high_2d, 2 * high_2d - price, price)
    price = np.where(price < low_2d, 2 * low_2d - price, price)
    if price_decimals is not None:
        price = np.round(price, price_decimals)
    np.clip(price, low_2d, high_2d, out=price)
    for column in range(4):
        price[rows, anchors[:, column]] = anchor_prices[:, column]

    # Squared exponentials (Weibull, shape 1/2): many small trades, a few large ones;
    # the floor keeps a weight from underflowing to a zero size.
    weights = np.square(rng.standard_exponential((m, n))) + 1e-3
    size = weights * (volume / weights.sum(axis=1))[:, None]
    if m and not (size > 0).all():
        bad = int(open_time[(size <= 0).any(axis=1)][0])
        raise InvalidCandleError("volume too small to split into positive sizes", open_time=bad)

    # Sorted uniform arrival offsets without a sort: normalized cumulative exponentials.
    arrivals = np.cumsum(rng.standard_exponential((m, n + 1)), axis=1)
    offsets = np.floor(arrivals[:, :n] / arrivals[:, n:] * interval_ms).astype(np.int64)
    np.minimum(offsets, interval_ms - 1, out=offsets)

    # Tick rule: an uptick is a taker buy, a downtick a sell, no change is a coin flip.
    move = np.zeros((m, n))
    move[:, 1:] = np.diff(price, axis=1)
    is_buy = (move > 0) | ((move == 0) & (rng.random((m, n)) < 0.5))
    return {
        "ts": (open_time[:, None] + offsets).ravel(),
        "price": price.ravel(),
        "size": size.ravel(),
        "is_buy": is_buy.ravel(),
    }


def _empty_columns() -> dict[str, np.ndarray]:
    return {
        "ts": np.empty(0, np.int64),
        "price": np.empty(0),
        "size": np.empty(0),
        "is_buy": np.empty(0, np.bool_),
        "trade_id": np.empty(0, np.int64),
        "received_ts": np.empty(0, np.int64),
    }


def _checked_struct_factory(exchange: str, symbols: list[str]) -> Any:
    """The Trade struct type, after the codec accepted `exchange` and each symbol."""
    codec = codec_for(Trade)
    for symbol in symbols:
        codec.build(
            exchange=exchange, symbol=symbol, trade_id="1", price=1.0, size=1.0,
            side="buy", ts=0, received_ts=0,
        )  # fmt: skip
    return codec.struct


def _structs(
    make: Any, exchange: str, symbols: list[str], columns: dict[str, np.ndarray]
) -> Iterator[msgspec.Struct]:
    for symbol, trade_id, price, size, is_buy, ts, received_ts in zip(
        symbols,
        columns["trade_id"].tolist(),
        columns["price"].tolist(),
        columns["size"].tolist(),
        columns["is_buy"].tolist(),
        columns["ts"].tolist(),
        columns["received_ts"].tolist(),
        strict=True,
    ):
        yield make(
            exchange=exchange, symbol=symbol, trade_id=str(trade_id), price=price, size=size,
            side="buy" if is_buy else "sell", ts=ts, received_ts=received_ts,
        )  # fmt: skip
