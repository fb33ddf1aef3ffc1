"""Decoding, dead-lettering and replay protection around the candle state."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.candle_stream import CandleStream, RawRecord
from processors.exceptions import CandleStateError
from schemas.codec import codec_for
from schemas.events import Candle, Trade
from sigflow.settings import Settings

TOPIC = "sigflow.trades"
KEY = b"coinbase:BTC-USD"


def trade(
    trade_id: int,
    ts: int,
    price: float = 100.0,
    size: float = 1.0,
    key: bytes = KEY,
    side: str = "buy",
) -> bytes:
    exchange, symbol = key.decode().split(":")
    return codec_for(Trade).encode(
        codec_for(Trade).build(
            exchange=exchange,
            symbol=symbol,
            trade_id=str(trade_id),
            price=price,
            size=size,
            side=side,
            ts=ts,
            received_ts=ts,
        )
    )


def records(values: list[bytes], key: bytes = KEY, first_offset: int = 0) -> list[RawRecord]:
    return [RawRecord(TOPIC, 0, first_offset + i, key, v) for i, v in enumerate(values)]


class MemoryState(dict[bytes, Any]):
    def apply(self, result: Any) -> None:
        self.update(result.states)


def test_closed_candle_is_emitted_as_canonical_json_with_the_record_key() -> None:
    stream, state = CandleStream(["1m"], lateness_ms=0), MemoryState()
    result = stream.process(
        records([trade(1, 1_000, 10), trade(2, 2_000, 12), trade(3, 61_000)]), state.get
    )
    [(key, value)] = result.candles
    candle = codec_for(Candle).decode(value)
    assert key == KEY
    assert (candle.open, candle.high, candle.close, candle.trade_count) == (10, 12, 12, 2)
    assert candle.vwap == 11 and candle.final is True
    assert value == codec_for(Candle).encode(candle)


def test_malformed_and_mis_keyed_records_go_to_the_dlq_and_the_batch_goes_on() -> None:
    stream, state = CandleStream(["1m"], lateness_ms=0), MemoryState()
    batch = records([b"{oops", trade(1, 1_000)]) + records(
        [trade(2, 1_500)], key=b"x:Y-Z", first_offset=2
    )
    result = stream.process(batch, state.get)
    reasons = [orjson.loads(value) for _, value in result.dead_letters]
    assert [r["offset"] for r in reasons] == [0, 2]
    assert "not valid JSON" in reasons[0]["reason"]
    assert "is not exchange:symbol" in reasons[1]["reason"]
    assert all(r["source_topic"] == TOPIC and r["component"] == "processor" for r in reasons)
    assert result.trades == 1


def test_records_already_folded_into_state_are_skipped_after_a_restart() -> None:
    stream, state = CandleStream(["1m"], lateness_ms=0), MemoryState()
    first = records([trade(1, 1_000), trade(2, 2_000)])
    state.apply(stream.process(first, state.get))
    # The worker crashed before committing: the same offsets are read again.
    again = stream.process(first + records([trade(3, 61_000)], first_offset=2), state.get)
    assert again.skipped == 2
    [(_, value)] = again.candles
    assert codec_for(Candle).decode(value).trade_count == 2


def test_late_trade_is_dead_lettered_with_kind_late() -> None:
    stream, state = CandleStream(["1m"], lateness_ms=1_000), MemoryState()
    result = stream.process(
        records([trade(1, 1_000), trade(2, 70_000), trade(3, 30_000)]), state.get
    )
    [(_, value)] = result.dead_letters
    letter = orjson.loads(value)
    assert letter["error_kind"] == "late" and letter["offset"] == 2
    assert result.late == 1


def test_late_trade_is_dead_lettered_once_naming_the_finest_interval_and_the_watermark() -> None:
    stream, state = CandleStream(["1s", "1m", "5m"], lateness_ms=1_000), MemoryState()
    batch = [trade(1, 10_000), trade(2, 13_500), trade(3, 11_200, price=999.0), trade(4, 70_000)]
    result = stream.process(records(batch), state.get)
    [(_, value)] = result.dead_letters
    letter = orjson.loads(value)
    assert (letter["error_kind"], letter["offset"], result.late) == ("late", 2, 1)
    assert letter["reason"] == (
        "trade at 11200 arrived after its 1s window [11000, 12000) closed under watermark "
        "12500 (newest trade time - allowed lateness 1000 ms); counted in no interval"
    )
    # Its minute was still open, yet the late trade is not in the minute candle either.
    candles = [codec_for(Candle).decode(v) for _, v in result.candles]
    [minute] = [c for c in candles if c.interval == "1m"]
    assert (minute.trade_count, minute.high) == (2, 100.0)


def test_the_default_intervals_each_close_their_candles_in_close_time_order() -> None:
    stream, state = CandleStream(Settings().candle_intervals, lateness_ms=0), MemoryState()
    day = 86_400_000
    result = stream.process(records([trade(1, 1_000), trade(2, day + 1)]), state.get)
    candles = [codec_for(Candle).decode(v) for _, v in result.candles]
    assert [(c.interval, c.open_time, c.close_time) for c in candles] == [
        ("1s", 1_000, 2_000),
        ("1m", 0, 60_000),
        ("5m", 0, 300_000),
        ("15m", 0, 900_000),
        ("1h", 0, 3_600_000),
        ("1d", 0, day),
    ]
    assert all(c.trade_count == 1 and c.vwap == 100.0 for c in candles)
    indicators = [orjson.loads(v) for _, v in result.indicators]
    assert [i["interval"] for i in indicators] == [c.interval for c in candles]


def test_state_of_the_older_per_interval_layout_is_refused_with_what_to_do() -> None:
    stream = CandleStream(["1m"], lateness_ms=0)
    old = {KEY: {"offset": 0, "intervals": {"1m": {"max_ts": 1, "windows": {}}}}}
    with pytest.raises(CandleStateError, match="new app id"):
        stream.process(records([trade(1, 1_000)], first_offset=1), old.get)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([KEY, b"binance:ETH-USDT"]),
            st.integers(0, 20_000),  # event time advances by this much
            st.integers(0, 6_000),  # then the trade is this much older (arrives late)
            st.floats(50, 150),
            st.floats(0.001, 5),
            st.sampled_from(["buy", "sell"]),
        ),
        min_size=20,
        max_size=200,
    ),
    st.lists(st.integers(1, 60), min_size=1, max_size=10),
    st.integers(0, 5_000),
)
def test_every_output_of_every_interval_is_the_same_however_records_are_batched(
    rows: list[tuple[bytes, int, int, float, float, str]], cuts: list[int], lateness: int
) -> None:
    now, values = 0, []
    for offset, (key, step, delay, price, size, side) in enumerate(rows):
        now += step
        ts = max(0, now - delay)
        values.append(RawRecord(TOPIC, 0, offset, key, trade(offset, ts, price, size, key, side)))

    def run(sizes: list[int], through_json: bool = False) -> dict[str, Any]:
        stream, state = CandleStream(Settings().candle_intervals, lateness), MemoryState()
        out: dict[str, Any] = defaultdict(list)
        at, step = 0, 0
        while at < len(values):
            size = sizes[step % len(sizes)]
            result = stream.process(values[at : at + size], state.get)
            state.apply(result)
            if through_json:  # as a restarted worker reads it back from the changelog
                state = MemoryState({k: orjson.loads(orjson.dumps(v)) for k, v in state.items()})
            for name in ("candles", "indicators", "signals"):
                out[name] += getattr(result, name)
            # A dead letter is keyed by topic and carries the wall-clock time it was
            # written: group by the trade's key instead, and leave the time out.
            letters = [orjson.loads(value) for _, value in result.dead_letters]
            out["dead_letters"] += [
                (letter["key"].encode(), {**letter, "rejected_at": None}) for letter in letters
            ]
            out["anomalies"] += result.anomalies
            at, step = at + size, step + 1
        out["anomalies"] = sorted(out["anomalies"])  # stale-feed findings come per batch
        # Per key, the records must match byte for byte and in order.
        return {
            name: sorted(records, key=lambda kv: kv[0]) if name != "anomalies" else records
            for name, records in out.items()
        }

    whole = run([len(values)])
    assert run(cuts) == whole
    assert run(cuts, through_json=True) == whole


def test_every_configured_interval_gets_its_own_candles() -> None:
    stream, state = CandleStream(["1m", "5m"], lateness_ms=0), MemoryState()
    result = stream.process(records([trade(1, 1_000), trade(2, 301_000)]), state.get)
    intervals = sorted(codec_for(Candle).decode(v).interval for _, v in result.candles)
    assert intervals == ["1m", "5m"]


def test_each_closed_candle_advances_its_indicators_in_time_order() -> None:
    stream, state = CandleStream(["1m"], lateness_ms=0), MemoryState()
    closes = [100.0 + i for i in range(25)]
    values = [trade(i, i * 60_000 + 1_000, price) for i, price in enumerate(closes)]
    result = stream.process(records(values), state.get)
    emitted = [orjson.loads(value) for _, value in result.indicators]
    assert [e["open_time"] for e in emitted] == [i * 60_000 for i in range(24)]
    assert "sma_20" not in emitted[18]["values"]
    assert emitted[19]["values"]["sma_20"] == sum(closes[:20]) / 20
    assert all(e["values"]["vwap"] == closes[i] for i, e in enumerate(emitted))


def test_indicator_state_survives_a_restart_mid_series() -> None:
    closes = [100.0 + (i % 7) for i in range(40)]
    values = [trade(i, i * 60_000 + 1_000, price) for i, price in enumerate(closes)]
    whole = CandleStream(["1m"], lateness_ms=0)
    uninterrupted = whole.process(records(values), MemoryState().get).indicators
    state = MemoryState()
    first = CandleStream(["1m"], lateness_ms=0).process(records(values[:23]), state.get)
    state.apply(first)
    # Through JSON, as the Faust changelog stores each key's value.
    restored = {key: orjson.loads(orjson.dumps(value)) for key, value in state.items()}
    second = CandleStream(["1m"], lateness_ms=0).process(
        records(values[23:], first_offset=23), restored.get
    )
    assert first.indicators + second.indicators == uninterrupted


def test_signals_fire_on_the_candle_where_the_rule_crosses() -> None:
    closes = [200.0 - i for i in range(40)] + [160.0 + 3 * i for i in range(40)]
    values = [trade(i, i * 60_000 + 1_000, price) for i, price in enumerate(closes)]
    result = CandleStream(["1m"], lateness_ms=0).process(records(values), MemoryState().get)
    indicators = [orjson.loads(v) for _, v in result.indicators]
    spread = [
        (i["open_time"], i["values"]["ema_12"] - i["values"]["ema_26"])
        for i in indicators
        if "ema_26" in i["values"]
    ]
    crossings = [
        now for (_, before), (now, after) in itertools.pairwise(spread) if before < 0 <= after
    ]
    signals = [orjson.loads(v) for _, v in result.signals]
    ema = [s for s in signals if s["rule"] == "ema_cross_12_26"]
    assert [s["open_time"] for s in ema] == crossings and len(crossings) == 1
    assert ema[0]["direction"] == 1 and 0 < ema[0]["strength"] <= 1
    assert "crossed above" in ema[0]["explanation"]
    assert ema[0]["price"] == closes[crossings[0] // 60_000]


def test_a_micro_batch_yields_each_record_once_in_offset_order_per_partition() -> None:
    from types import SimpleNamespace

    from processors.app import raw_records

    def event(partition: int, offset: int) -> SimpleNamespace:
        message = SimpleNamespace(
            topic="t", partition=partition, offset=offset, key=b"k", value=str(offset).encode()
        )
        return SimpleNamespace(message=message)

    # buffered before a rebalance (5, 6), then re-delivered from the committed offset (4-6)
    events = [event(0, 5), event(1, 9), event(0, 6), event(0, 4), event(0, 5), event(0, 6)]
    assert [(r.partition, r.offset) for r in raw_records(events)] == [
        (0, 4),
        (0, 5),
        (0, 6),
        (1, 9),
    ]
