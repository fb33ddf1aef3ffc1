"""Pure helpers of `sigflow bench latency`: which trade closes a window, and pacing.

No speed is asserted here: latency is measured by `sigflow bench latency`.
"""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from bench.latency import (
    INTERVAL,
    closing_trades,
    output_latencies,
    relay_latencies,
    trades_due,
)
from bench.processors import (
    NaiveCandleAgent,
    bench_trades,
    micro_batches,
    trade_records,
)
from processors.candles import interval_ms

MINUTE = 60_000


def trade(symbol: str, ts: int, trade_id: str = "1") -> SimpleNamespace:
    return SimpleNamespace(exchange="x", symbol=symbol, ts=ts, trade_id=trade_id)


def test_a_window_closes_on_the_first_trade_past_its_end_plus_lateness() -> None:
    trades = [
        trade("A", 1_000),
        trade("A", 59_000),
        trade("A", 61_000),  # watermark 59,000: minute 0 still open
        trade("B", 200_000),  # other keys do not move A's watermark
        trade("A", 62_000),  # watermark 60,000 = end of minute 0: closes it
        trade("A", 130_000),  # closes minute 1
    ]
    assert closing_trades(trades, MINUTE, 2_000) == {(b"x:A", 0): 4, (b"x:A", MINUTE): 5}


def test_a_late_trade_opens_no_window() -> None:
    trades = [trade("A", 125_000), trade("A", 10_000), trade("A", 190_000)]
    # minute 0 was closed before the late trade came: only minute 2 closes, by the last
    assert closing_trades(trades, MINUTE, 2_000) == {(b"x:A", 2 * MINUTE): 2}


def test_closing_trades_are_those_after_which_the_processor_rules_emit_each_candle() -> None:
    records = trade_records(20_000, seed=5, symbols=3, trades_per_second=40.0)
    agent = NaiveCandleAgent((INTERVAL,), 2_000)
    emitted_after: dict[tuple[bytes, int], int] = {}
    for index, batch in enumerate(micro_batches(records, 1)):
        for key, value in agent.process(batch):
            emitted_after[(key, orjson.loads(value)["open_time"])] = index
    trades = bench_trades(20_000, seed=5, symbols=3, trades_per_second=40.0)
    assert closing_trades(trades, interval_ms(INTERVAL), 2_000) == emitted_after
    assert len(emitted_after) > 20


def test_the_pace_hands_over_rate_times_elapsed_and_never_more_than_all() -> None:
    assert trades_due(0.0, 10_000, 50) == 0
    assert trades_due(0.00105, 10_000, 50) == 10
    assert trades_due(-1.0, 10_000, 50) == 0
    assert trades_due(3.0, 10_000, 50) == 50


def test_latency_is_arrival_minus_the_hand_over_of_the_closing_trade() -> None:
    closing = {(b"x:A", 0): 1, (b"x:A", MINUTE): 2}
    handed = [10.0, 11.0, 20.0]
    records = [
        ("candles", b"x:A", b'{"open_time": 0}', 11.25),
        ("signals", b"x:A", b'{"open_time": 0}', 11.5),
        ("candles", b"x:A", b'{"open_time": 60000}', 20.01),
    ]
    assert output_latencies(records, "candles", closing, handed, since=0.0) == [0.25, 20.01 - 20]
    assert output_latencies(records, "signals", closing, handed, since=0.0) == [0.5]
    # windows closed before `since` (the warm-up) are left out
    assert output_latencies(records, "candles", closing, handed, since=15.0) == [20.01 - 20]

    relayed = [("relayed", b"x:A", b'[{"trade_id": "7"}, {"trade_id": "8"}]', 11.125)]
    assert relay_latencies(relayed, {(b"x:A", "8"): 1}, handed, since=0.0) == [0.125]
