"""Candle building for every interval against an independent pandas computation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.candles import (
    CandleBuilder,
    ClosedCandle,
    Ladder,
    LateTrade,
    TradeColumns,
    interval_ms,
)
from processors.exceptions import CandleStateError

SECOND, MINUTE, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000
DEFAULT = ("1s", "1m", "5m", "15m", "1h", "1d")
FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "buy_volume", "trade_count")


def columns(ts: list[int], price: list[float], size: list[float], buy: list[bool]) -> TradeColumns:
    return TradeColumns(
        [int(t) for t in ts], [float(p) for p in price], [float(s) for s in size], list(buy)
    )


def sliced(trades: TradeColumns, part: slice) -> TradeColumns:
    return TradeColumns(trades.ts[part], trades.price[part], trades.size[part], trades.is_buy[part])


def random_trades(seed: int, count: int, span_ms: int, jitter_ms: int) -> TradeColumns:
    """Trades in bursts with long gaps between them, arriving up to `jitter_ms` out of order."""
    rng = np.random.default_rng(seed)
    bursts = np.sort(rng.integers(0, span_ms, 12))
    ts = np.sort(bursts[rng.integers(0, bursts.size, count)] + rng.integers(0, 20 * MINUTE, count))
    ts = ts + rng.integers(-jitter_ms, 1, count)  # some arrive after newer ones
    return columns(
        list(ts + 10 * DAY),
        list(np.round(100 + rng.normal(0, 1, count).cumsum(), 2)),
        list(np.round(rng.uniform(0.01, 2, count), 6)),
        list(rng.random(count) < 0.5),
    )


def reference_late(trades: TradeColumns, finest: int, lateness: int) -> np.ndarray:
    """Late mask computed vectorized: the finest window ended before the bound seen so far."""
    ts = np.asarray(trades.ts)
    newest_before = np.maximum.accumulate(np.concatenate([[ts[0]], ts[:-1]]))
    watermark = newest_before - lateness
    bound = watermark - watermark % finest
    late = ts - ts % finest + finest <= bound
    late[0] = False
    return late


def pandas_candles(trades: TradeColumns, width: int, keep: np.ndarray) -> pd.DataFrame:
    """Reference OHLCV with pandas resample over the kept trades, stably sorted by time."""
    frame = pd.DataFrame(
        {"price": trades.price, "size": trades.size, "buy": trades.is_buy},
        index=pd.to_datetime(trades.ts, unit="ms"),
    )[keep]
    frame = frame.sort_index(kind="stable")  # ties keep arrival order: first opens, last closes
    frame["quote"] = frame.price * frame["size"]
    frame["buy_size"] = frame["size"].where(frame.buy, 0.0)
    grouped = frame.resample(f"{width}ms")
    out = pd.DataFrame(
        {
            "open": grouped.price.first(),
            "high": grouped.price.max(),
            "low": grouped.price.min(),
            "close": grouped.price.last(),
            "volume": grouped["size"].sum(),
            "quote_volume": grouped.quote.sum(),
            "buy_volume": grouped.buy_size.sum(),
            "trade_count": grouped.price.count(),
        }
    )
    out = out[out.trade_count > 0]  # resample lists empty windows: sigflow has no candle there
    out.index = out.index.as_unit("ms").asi8
    return out


def run_batches(
    builder: CandleBuilder, trades: TradeColumns, sizes: list[int]
) -> tuple[dict[str, list[ClosedCandle]], list[tuple[int, int, int]]]:
    """Feed the trades in batches of the given sizes (cycled); all closed candles and the
    late trades as (absolute index, window start, watermark)."""
    closed: dict[str, list[ClosedCandle]] = {name: [] for name in builder.ladder.widths}
    late: list[tuple[int, int, int]] = []
    at, step = 0, 0
    while at < len(trades):
        size = sizes[step % len(sizes)]
        part = slice(at, at + size)
        new, late_here = builder.add(sliced(trades, part))
        for name, candles in new.items():
            closed[name] += candles
        late += [(at + t.index, t.window_start, t.watermark) for t in late_here]
        at, step = at + size, step + 1
    return closed, late


def assert_matches_reference(
    ours: dict[int, dict[str, float]], reference: pd.DataFrame, where: str
) -> None:
    assert sorted(ours) == list(reference.index), where
    for start, row in zip(sorted(ours), reference.itertuples(), strict=True):
        candle = ours[start]
        for exact in ("open", "high", "low", "close", "trade_count"):
            assert candle[exact] == getattr(row, exact), (where, start, exact)
        for summed in ("volume", "quote_volume", "buy_volume"):
            want = getattr(row, summed)
            assert candle[summed] == pytest.approx(want, rel=1e-11, abs=1e-12), (where, summed)


def as_fields(closed: list[ClosedCandle]) -> dict[int, dict[str, float]]:
    return {c.open_time: {name: getattr(c.aggregate, name) for name in FIELDS} for c in closed}


def test_interval_names_parse_to_milliseconds() -> None:
    assert [interval_ms(x) for x in DEFAULT] == [SECOND, MINUTE, 5 * MINUTE, 15 * MINUTE, HOUR, DAY]
    for bad in ("", "m", "0m", "1w", "x1m"):
        with pytest.raises(ValueError):
            interval_ms(bad)


def test_each_interval_is_built_from_the_coarsest_finer_one_that_divides_it() -> None:
    ladder = Ladder.of(["1d", "1m", "1s", "1h", "15m", "5m"])
    assert list(ladder.widths) == list(DEFAULT)
    assert ladder.sources == {"1m": "1s", "5m": "1m", "15m": "5m", "1h": "15m", "1d": "1h"}
    assert Ladder.of(["1m", "3m", "5m"]).sources == {"3m": "1m", "5m": "1m"}


@pytest.mark.parametrize(
    ("intervals", "message"),
    [
        (["2s", "3s"], "multiples of the finest, 2s"),
        (["60s", "1m"], "same width twice"),
        ([], "at least one"),
        (["1m", "7x"], "unknown candle interval"),
    ],
)
def test_intervals_that_do_not_nest_are_refused(intervals: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ladder.of(intervals)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_interval_matches_a_pandas_resample_with_gaps_and_late_trades(seed: int) -> None:
    lateness = 1_500
    trades = random_trades(seed, 6_000, span_ms=3 * DAY, jitter_ms=4_000)
    builder = CandleBuilder(Ladder.of(DEFAULT), lateness)
    closed, late = run_batches(builder, trades, [997])

    late_mask = reference_late(trades, SECOND, lateness)
    assert [index for index, _, _ in late] == list(np.flatnonzero(late_mask))
    assert 0 < len(late) < len(trades) // 5  # the data has late trades, and most count
    final_watermark = max(trades.ts) - lateness
    for name, width in builder.ladder.widths.items():
        reference = pandas_candles(trades, width, ~late_mask)
        is_closed = reference.index + width <= final_watermark
        assert_matches_reference(as_fields(closed[name]), reference[is_closed], f"{name} closed")
        if name == "1s":  # coarser windows take their trades from closed seconds only
            still_open = as_fields(
                [ClosedCandle(start, agg) for start, agg in builder.windows[name].items()]
            )
            assert_matches_reference(still_open, reference[~is_closed], f"{name} open")
        # Gaps: the data spans days with hours of silence, and no window without trades
        # got a candle (the reference drops empty windows, the key sets are equal).
        span = (max(trades.ts) - min(trades.ts)) // width + 1
        if width <= HOUR:
            assert len(reference) < span


def test_a_late_trade_counts_in_no_interval_even_where_its_window_is_open() -> None:
    builder = CandleBuilder(Ladder.of(["1s", "1m"]), lateness_ms=1_000)
    trades = columns([10_000, 13_500, 11_200, 70_000], [1, 2, 9, 3], [1, 1, 5, 1], [True] * 4)
    closed, late = builder.add(trades)
    # The bound was 12_000 when 11_200 arrived: its 1s window [11_000, 12_000) had closed,
    # although its minute [0, 60_000) was still open.
    assert late == [LateTrade(index=2, window_start=11_000, watermark=12_500)]
    [minute] = closed["1m"]
    assert (minute.aggregate.high, minute.aggregate.trade_count, minute.aggregate.volume) == (
        2,
        2,
        2,
    )
    assert [c.open_time for c in closed["1s"]] == [10_000, 13_000]


def test_a_coarse_window_closes_when_the_finest_window_at_its_end_closes() -> None:
    builder = CandleBuilder(Ladder.of(["1s", "1m", "5m"]), lateness_ms=2_000)
    closed, _ = builder.add(columns([1_000, 59_500, 61_000], [1, 2, 3], [1, 1, 1], [True] * 3))
    assert closed["1m"] == []  # watermark 59_000: the second [59_000, 60_000) is open
    assert [c.open_time for c in closed["1s"]] == [1_000]
    closed, _ = builder.add(columns([62_000], [4], [1], [False]))
    assert [c.open_time for c in closed["1s"]] == [59_000]  # watermark 60_000
    [minute] = closed["1m"]
    assert (minute.open_time, minute.aggregate.close, minute.aggregate.trade_count) == (0, 2, 2)
    assert closed["5m"] == []
    closed, _ = builder.add(columns([302_000], [5], [1], [False]))
    assert [c.open_time for c in closed["5m"]] == [0]
    assert closed["5m"][0].aggregate.trade_count == 4


def test_out_of_order_trade_within_lateness_sets_open_by_event_time_in_every_interval() -> None:
    builder = CandleBuilder(Ladder.of(["1s", "1m"]), lateness_ms=25_000)
    builder.add(columns([30_000, 10_000], [5, 4], [1, 1], [True, True]))
    closed, late = builder.add(columns([90_000], [6], [1], [True]))
    assert late == []
    for name in ("1m",):
        [candle] = closed[name]
        assert (candle.aggregate.open, candle.aggregate.close) == (4, 5)


def test_windows_without_trades_produce_no_candle_in_any_interval() -> None:
    builder = CandleBuilder(Ladder.of(DEFAULT), lateness_ms=0)
    closed, _ = builder.add(
        columns([1_000, 5 * MINUTE + 1, 2 * DAY + 7], [1, 2, 3], [1, 1, 1], [True] * 3)
    )
    assert [c.open_time for c in closed["1s"]] == [1_000, 5 * MINUTE]
    assert [c.open_time for c in closed["1m"]] == [0, 5 * MINUTE]
    assert [c.open_time for c in closed["5m"]] == [0, 5 * MINUTE]
    assert [c.open_time for c in closed["1h"]] == [0]
    assert [c.open_time for c in closed["1d"]] == [0]


def test_open_state_stays_bounded_and_round_trips_through_json() -> None:
    lateness = 2_000
    builder = CandleBuilder(Ladder.of(DEFAULT), lateness)
    trades = random_trades(5, 3_000, span_ms=DAY, jitter_ms=1_500)
    for start in range(0, len(trades), 300):
        part = slice(start, start + 300)
        builder.add(sliced(trades, part))
        open_windows = {name: len(windows) for name, windows in builder.windows.items()}
        assert open_windows["1s"] <= lateness // SECOND + 2
        assert all(count <= 1 for name, count in open_windows.items() if name != "1s")
    saved = json.loads(json.dumps(builder.to_dict()))
    assert CandleBuilder.from_dict(saved, Ladder.of(DEFAULT), lateness) == builder


def test_saved_state_refuses_a_different_finest_interval_and_takes_new_coarse_ones() -> None:
    builder = CandleBuilder(Ladder.of(["1s", "1m"]), lateness_ms=0)
    builder.add(columns([1_000, 2_500], [1, 2], [1, 1], [True, False]))
    saved = builder.to_dict()
    with pytest.raises(CandleStateError, match=r"built on 1s windows.*finest interval is 1m"):
        CandleBuilder.from_dict(saved, Ladder.of(["1m", "5m"]), 0)
    wider = CandleBuilder.from_dict(saved, Ladder.of(["1s", "1m", "1h"]), 0)
    assert wider.windows["1h"] == {} and wider.windows["1s"] == builder.windows["1s"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 20 * MINUTE), st.floats(1, 1_000), st.floats(0.001, 10), st.booleans()
        ),
        min_size=1,
        max_size=200,
    ),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
    st.integers(0, 3 * MINUTE),
)
def test_batch_boundaries_never_change_any_interval(
    rows: list[tuple[int, float, float, bool]], cuts: list[int], lateness: int
) -> None:
    trades = columns(*(list(column) for column in zip(*rows, strict=True)))
    intervals = ("1s", "1m", "5m", "15m")

    def run(sizes: list[int]) -> tuple[object, ...]:
        builder = CandleBuilder(Ladder.of(intervals), lateness)
        closed, late = run_batches(builder, trades, sizes)
        return closed, late, builder.to_dict()

    # Exact equality: every float, in every interval, is the same bit for bit.
    assert run(cuts) == run([len(rows)])
