"""The candle stream's anomaly outputs: candle detectors, stale feeds, candles by symbol."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2

from bench.anomalies import START_TS, Scenario, market_trades
from processors.candle_stream import CandleStream, RawRecord, batched_by_key, feed_clock_key
from schemas.codec import codec_for
from schemas.events import Trade

MINUTE = 60_000


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_feed_clock_keys_land_on_their_own_partition(partitions: int) -> None:
    for partition in range(partitions):
        key = feed_clock_key(partition, partitions)
        assert (murmur2(key) & 0x7FFFFFFF) % partitions == partition


def run(records: list[Any], batch: int) -> tuple[list[dict[str, Any]], list[bytes], int]:
    stream, state = CandleStream(["1m"], 2_000), {}
    anomalies, by_symbol, lateness = [], [], 0
    for start in range(0, len(records), batch):
        result = stream.process(records[start : start + batch], state.get)
        state.update(result.states)
        anomalies += [orjson.loads(value) for _, value in result.anomalies]
        by_symbol += [key for key, _ in result.by_symbol]
        lateness += len(result.lateness_ms)
    return anomalies, by_symbol, lateness


def test_jumps_spikes_and_stale_feeds_come_out_of_the_candle_stream_whatever_the_batching() -> None:
    scenario = Scenario(
        exchanges=("binance", "coinbase"),
        symbols={"BTC-USDT": 60_000.0},
        minutes=40,
        trades_per_second=2.0,
        seed=3,
        jumps=(("BTC-USDT", 30, 0.03),),
        spikes=(("coinbase", "BTC-USDT", 25, 8.0),),
        stale=(("binance", "BTC-USDT", 33 * MINUTE, 37 * MINUTE),),
    )
    codec = codec_for(Trade)
    # One partition, so the two feeds watch each other.
    records = [
        RawRecord("t", 0, offset, f"{t.exchange}:{t.symbol}".encode(), codec.encode(t))
        for offset, t in enumerate(market_trades(scenario))
    ]
    small, by_symbol, _ = run(records, 97)
    large, _, _ = run(records, 5_000)
    # Order across feeds follows the batches; the records themselves do not.
    assert sorted(small, key=repr) == sorted(large, key=repr)
    found = {(a["kind"], a["subject"], a["ts"]) for a in small if a["kind"] != "stale_feed"}
    jump, spike = START_TS + 30 * MINUTE, START_TS + 25 * MINUTE
    assert found >= {
        ("price_jump", "binance:BTC-USDT", jump),
        ("price_jump", "coinbase:BTC-USDT", jump),
        ("volume_spike", "coinbase:BTC-USDT", spike),
    }
    stale = [a for a in small if a["kind"] == "stale_feed"]
    assert [(a["subject"], a["severity"]) for a in stale] == [
        ("binance:BTC-USDT", level) for level in ("info", "warning", "critical")
    ]
    assert all(START_TS + 33 * MINUTE < a["ts"] < START_TS + 37 * MINUTE for a in stale)
    assert set(by_symbol) == {b"BTC-USDT"}


def batch_records(trades: list[Any], span_ms: int) -> list[RawRecord]:
    """Each feed's trades in one record per `span_ms` of event time, in the order of
    their first trades: as `EventProducer` writes trades replayed faster than real time,
    one record per key and linger."""
    codec = codec_for(Trade)
    chunks: dict[tuple[bytes, int], list[Any]] = {}
    for trade in trades:
        key = f"{trade.exchange}:{trade.symbol}".encode()
        chunks.setdefault((key, trade.ts // span_ms), []).append(trade)
    ordered = sorted(chunks.items(), key=lambda item: item[1][0].ts)
    return [
        RawRecord("t", 0, offset, key, codec.encode_batch(chunk))
        for offset, ((key, _), chunk) in enumerate(ordered)
    ]


def test_batch_records_flag_the_same_stale_feeds_and_count_every_late_trade() -> None:
    scenario = Scenario(
        exchanges=("binance", "coinbase"),
        symbols={"BTC-USDT": 60_000.0},
        minutes=30,
        trades_per_second=2.0,
        seed=4,
        stale=(("binance", "BTC-USDT", 10 * MINUTE, 16 * MINUTE),),
    )
    codec = codec_for(Trade)
    trades = list(market_trades(scenario))
    # Now and then two trades of one feed swap: out of order inside a batch record.
    for index in range(5, len(trades) - 1, 400):
        if trades[index].exchange == trades[index + 1].exchange:
            trades[index], trades[index + 1] = trades[index + 1], trades[index]
    singles = [
        RawRecord("t", 0, offset, f"{t.exchange}:{t.symbol}".encode(), codec.encode(t))
        for offset, t in enumerate(trades)
    ]
    one_each, _, late_singles = run(singles, 200)
    # Each record spans 50 s of one feed, far more than the 15 s a silence needs.
    batched, _, late_batched = run(batch_records(trades, 50_000), 7)

    def stale(anomalies: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(a["subject"], a["severity"]) for a in anomalies if a["kind"] == "stale_feed"]

    assert stale(one_each) == [
        ("binance:BTC-USDT", level) for level in ("info", "warning", "critical")
    ]
    # Only the feed that fell silent, up to the same level; the watermark moves in
    # steps of a record, so a level it jumps past is not reported on its own.
    assert {subject for subject, _ in stale(batched)} == {"binance:BTC-USDT"}
    assert stale(batched)[-1] == stale(one_each)[-1]
    assert late_batched == late_singles > 0


def test_the_stale_feed_clock_skips_records_it_has_already_seen() -> None:
    codec = codec_for(Trade)
    trade = codec.build(
        exchange="a", symbol="X-USDT", trade_id="1", price=1.0, size=1.0, side="buy", ts=5,
        received_ts=5,
    )  # fmt: skip
    value = codec.encode(trade)
    stream, state = CandleStream(["1m"], 0), {}
    first = stream.process([RawRecord("t", 0, 0, b"a:X-USDT", value)], state.get)
    state.update(first.states)
    again = stream.process([RawRecord("t", 0, 0, b"a:X-USDT", value)], state.get)
    assert again.skipped == 1
    assert again.states[feed_clock_key(0, None)]["feeds"]["a:X-USDT"][2] == 1


def test_closed_candles_go_to_the_by_symbol_topic_as_one_array_record_per_symbol() -> None:
    scenario = Scenario(
        exchanges=("binance", "coinbase"),
        symbols={"BTC-USDT": 60_000.0, "ETH-USDT": 3_000.0},
        minutes=5,
        trades_per_second=2.0,
        seed=1,
    )
    codec = codec_for(Trade)
    records = [
        RawRecord("t", 0, offset, f"{t.exchange}:{t.symbol}".encode(), codec.encode(t))
        for offset, t in enumerate(market_trades(scenario))
    ]
    result = CandleStream(["1m"], 2_000).process(records, {}.get)
    assert sorted(key for key, _ in result.by_symbol) == [b"BTC-USDT", b"ETH-USDT"]
    in_arrays = [
        (candle["exchange"], candle["open_time"])
        for key, value in result.by_symbol
        for candle in orjson.loads(value)
        if key == b"BTC-USDT"
    ]
    assert in_arrays == [
        (candle["exchange"], candle["open_time"])
        for candle in map(orjson.loads, (value for _, value in result.candles))
        if candle["symbol"] == "BTC-USDT"
    ]


def test_a_symbols_candles_are_split_over_records_of_bounded_size() -> None:
    values = [(b"BTC-USDT", b'{"n":%d}' % n) for n in range(1_201)]
    batched = batched_by_key(values)
    assert [len(orjson.loads(value)) for _, value in batched] == [500, 500, 201]
    assert [item["n"] for _, value in batched for item in orjson.loads(value)] == list(range(1_201))
