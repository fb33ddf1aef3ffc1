"""Candle building against an independent pandas computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.candles import CandleState, TradeColumns, interval_ms

MINUTE = 60_000


def columns(ts: list[int], price: list[float], size: list[float], buy: list[bool]) -> TradeColumns:
    return TradeColumns(
        [int(t) for t in ts], [float(p) for p in price], [float(s) for s in size], list(buy)
    )


def pandas_candles(trades: TradeColumns, width: int) -> pd.DataFrame:
    """Reference OHLCV with pandas resample over in-order trades."""
    frame = pd.DataFrame(
        {"price": trades.price, "size": trades.size, "buy": trades.is_buy},
        index=pd.to_datetime(trades.ts, unit="ms"),
    )
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
    return out[out.trade_count > 0]


def test_interval_names_parse_to_milliseconds() -> None:
    assert [interval_ms(x) for x in ("1s", "1m", "5m", "15m", "1h", "1d")] == [
        1_000,
        60_000,
        300_000,
        900_000,
        3_600_000,
        86_400_000,
    ]
    for bad in ("", "m", "0m", "1w", "x1m"):
        with pytest.raises(ValueError):
            interval_ms(bad)


def test_windows_match_pandas_resample() -> None:
    rng = np.random.default_rng(7)
    ts = np.sort(rng.integers(0, 30 * MINUTE, 5_000))
    trades = columns(
        list(ts),
        list(100 + rng.normal(0, 1, ts.size).cumsum()),
        list(rng.uniform(0.01, 2, ts.size)),
        list(rng.random(ts.size) < 0.5),
    )
    state = CandleState(MINUTE, lateness_ms=10**12)  # nothing closes: all windows stay open
    state.add(trades)
    ours = state.windows
    reference = pandas_candles(trades, MINUTE)
    assert sorted(ours) == [int(t.value // 1_000_000) for t in reference.index]
    for start, row in zip(sorted(ours), reference.itertuples(), strict=True):
        agg = ours[start]
        assert (agg.open, agg.high, agg.low, agg.close) == (row.open, row.high, row.low, row.close)
        assert agg.trade_count == row.trade_count
        assert agg.volume == pytest.approx(row.volume, rel=1e-12)
        assert agg.quote_volume == pytest.approx(row.quote_volume, rel=1e-12)
        assert agg.buy_volume == pytest.approx(row.buy_volume, rel=1e-12)


def test_window_closes_only_when_watermark_passes_its_end() -> None:
    state = CandleState(MINUTE, lateness_ms=2_000)
    closed, _ = state.add(columns([1_000, 59_000, 61_000], [1, 2, 3], [1, 1, 1], [True] * 3))
    assert closed == []  # watermark 59_000 < 60_000
    closed, _ = state.add(columns([62_000], [4], [1], [False]))
    assert [c.open_time for c in closed] == [0]
    assert closed[0].aggregate.close == 2 and closed[0].aggregate.trade_count == 2


def test_trade_for_a_closed_window_is_late_and_not_merged() -> None:
    state = CandleState(MINUTE, lateness_ms=2_000)
    closed, late = state.add(columns([1_000, 62_500, 58_000], [1, 2, 9], [1, 1, 1], [True] * 3))
    assert late == [False, False, True]
    assert closed[0].aggregate.high == 1  # the late 9 never reached the candle


def test_out_of_order_trade_within_lateness_sets_open_by_event_time() -> None:
    state = CandleState(MINUTE, lateness_ms=5_000)
    state.add(columns([30_000, 10_000], [5, 4], [1, 1], [True, True]))
    closed, late = state.add(columns([70_000], [6], [1], [True]))
    assert not any(late)
    assert (closed[0].aggregate.open, closed[0].aggregate.close) == (4, 5)


def test_minutes_without_trades_produce_no_candle() -> None:
    state = CandleState(MINUTE, lateness_ms=0)
    closed, _ = state.add(
        columns([1_000, 5 * MINUTE + 1, 9 * MINUTE], [1, 2, 3], [1, 1, 1], [True] * 3)
    )
    assert [c.open_time for c in closed] == [0, 5 * MINUTE]


def test_state_round_trips_through_its_dict_form() -> None:
    state = CandleState(MINUTE, lateness_ms=1_000)
    state.add(columns([1_000, 2_000], [1, 2], [1, 1], [True, False]))
    again = CandleState.from_dict(state.to_dict(), MINUTE, 1_000)
    assert again == state


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10 * MINUTE), st.floats(1, 1_000), st.floats(0.001, 10)),
        min_size=1,
        max_size=200,
    ),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
    st.integers(0, 3 * MINUTE),
)
def test_batch_boundaries_never_change_the_result(
    rows: list[tuple[int, float, float]], cuts: list[int], lateness: int
) -> None:
    trades = columns(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [True] * len(rows)
    )

    def run(batch_sizes: list[int]) -> tuple[list[object], list[bool]]:
        state, closed, late, at = CandleState(MINUTE, lateness), [], [], 0
        sizes = iter(batch_sizes * len(rows))
        while at < len(rows):
            step = next(sizes)
            part = slice(at, at + step)
            new, mask = state.add(
                TradeColumns(
                    trades.ts[part], trades.price[part], trades.size[part], trades.is_buy[part]
                )
            )
            closed += new
            late += mask
            at += step
        return closed, late

    whole = run([len(rows)])
    assert run(cuts) == whole
