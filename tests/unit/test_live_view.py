"""The API's in-memory pieces: price book, stream fan-out and cursors (no I/O)."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from api.cursor import decode_cursor, encode_cursor
from api.errors import ApiError
from api.fanout import Dropped, Hub, StreamEvent, Subscription
from api.feed import last_per_key
from api.pricebook import LastTrade, PriceBook
from schemas.api import SymbolPricePublic


def trade(exchange: str, price: float, ts: int, symbol: str = "BTC-USD") -> LastTrade:
    return LastTrade(exchange, symbol, price, 1.0, "buy", ts)


def test_cross_exchange_price_is_the_median_of_last_prices_with_each_age() -> None:
    book = PriceBook(max_skew_ms=60_000)
    for exchange, price, ts in (("a", 100.0, 1_000), ("b", 102.0, 2_000), ("c", 107.0, 1_500)):
        book.update(trade(exchange, price, ts))
    [btc] = book.latest(now_ms=5_000)
    SymbolPricePublic.model_validate(btc)  # the documented shape
    assert btc["price"] == statistics.median([100.0, 102.0, 107.0])
    assert (btc["low"], btc["high"], btc["ts"], btc["age_ms"]) == (100.0, 107.0, 2_000, 3_000)
    assert btc["spread_bps"] == pytest.approx((107 - 100) / 102 * 10_000)
    assert [(e["exchange"], e["age_ms"], e["behind_ms"]) for e in btc["exchanges"]] == [
        ("a", 4_000, 1_000),
        ("b", 3_000, 0),
        ("c", 3_500, 500),
    ]


def test_an_exchange_too_far_behind_is_shown_but_left_out_of_the_price() -> None:
    book = PriceBook(max_skew_ms=1_000)
    book.update(trade("fresh", 100.0, 10_000))
    book.update(trade("stale", 90.0, 8_000))
    [btc] = book.latest(now_ms=10_000)
    assert btc["price"] == 100.0
    assert [(e["exchange"], e["included"]) for e in btc["exchanges"]] == [
        ("fresh", True),
        ("stale", False),
    ]


def test_an_older_trade_never_replaces_a_newer_one() -> None:
    book = PriceBook(max_skew_ms=0)
    assert book.update(trade("a", 100.0, 2_000))
    assert not book.update(trade("a", 99.0, 1_000))
    assert book.latest(now_ms=2_000)[0]["price"] == 100.0


def test_symbols_and_exchange_filter_the_book() -> None:
    book = PriceBook(max_skew_ms=60_000)
    book.update(trade("a", 100.0, 1, "BTC-USD"))
    book.update(trade("b", 101.0, 1, "BTC-USD"))
    book.update(trade("a", 5.0, 1, "ETH-USD"))
    assert [p["symbol"] for p in book.latest(0, {"ETH-USD", "XRP-USD"})] == ["ETH-USD"]
    [only_b] = book.latest(0, exchange="b")
    assert (only_b["symbol"], only_b["price"], len(only_b["exchanges"])) == ("BTC-USD", 101.0, 1)


def test_conflation_keeps_the_last_record_of_each_key_in_offset_order() -> None:
    class Record:
        def __init__(self, key: bytes, offset: int) -> None:
            self.key, self.offset = key, offset

    records = [Record(b"a", 0), Record(b"b", 1), Record(b"a", 2), Record(b"c", 3), Record(b"b", 4)]
    kept = last_per_key(records)  # type: ignore[arg-type]
    assert [(r.key, r.offset) for r in kept] == [(b"a", 2), (b"c", 3), (b"b", 4)]


def event(topic: str, symbol: str | None, n: int = 0) -> StreamEvent:
    return StreamEvent(topic, symbol, b'{"n":%d}' % n)


async def test_hub_delivers_by_topic_and_symbol() -> None:
    hub = Hub(queue_size=10)
    btc = hub.connect("ws", Subscription(frozenset({"signals"}), frozenset({"BTC-USD"})))
    everything = hub.connect("ws", Subscription(frozenset({"signals", "anomalies"})))
    for e in (event("signals", "BTC-USD"), event("signals", "ETH-USD"), event("anomalies", None)):
        hub.publish(e)
    assert [btc.queue.get_nowait().symbol for _ in range(btc.queue.qsize())] == ["BTC-USD"]
    assert everything.queue.qsize() == 3


async def test_a_slow_client_is_dropped_with_a_reason_and_the_others_get_everything() -> None:
    hub = Hub(queue_size=3)
    subscription = Subscription(frozenset({"prices"}))
    slow, fast = hub.connect("sse", subscription), hub.connect("sse", subscription)
    received = []
    for n in range(10):
        hub.publish(event("prices", "BTC-USD", n))
        received.append(fast.queue.get_nowait())  # the fast client keeps up
        await asyncio.sleep(0)
    assert [e.payload for e in received] == [b'{"n":%d}' % n for n in range(10)]
    assert slow.queue.qsize() == 1
    dropped = slow.queue.get_nowait()
    assert isinstance(dropped, Dropped) and "slow client" in dropped.reason
    assert hub.clients() == 1
    hub.disconnect(slow)  # the route's own cleanup is harmless after a drop
    assert hub.clients() == 1


def test_recent_events_replay_what_a_subscription_matches() -> None:
    hub = Hub(queue_size=1, recent_size=2)
    for n in range(3):
        hub.publish(event("signals", "BTC-USD", n))
    hub.publish(event("signals", "ETH-USD", 9))
    btc = hub.recent(Subscription(frozenset({"signals"}), frozenset({"BTC-USD"})))
    assert [e.payload for e in btc] == [b'{"n":2}']


def test_cursor_round_trips_and_refuses_anything_else() -> None:
    cursor = encode_cursor([1_700_000_000_000, "binance", "BTC-USDT"])
    assert decode_cursor(cursor, [int, str, str]) == [1_700_000_000_000, "binance", "BTC-USDT"]
    for bad, types in ((cursor, [int]), ("not-a-cursor!", [int]), (encode_cursor(["x"]), [int])):
        with pytest.raises(ApiError) as raised:
            decode_cursor(bad, types)
        assert (raised.value.status, raised.value.code) == (422, "invalid_cursor")
