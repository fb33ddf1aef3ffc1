"""Pure parts of the exchange feeds: gaps, duplicates, back-off and rate limiting."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.exchanges.backfill import retry_after_seconds
from ingest.exchanges.feed import connection_chunks
from ingest.exchanges.pacing import TokenBucket, full_jitter_delay
from ingest.exchanges.tracking import Gap, RecentTradeIds, SequenceTracker


def test_sequence_tracker_finds_the_missing_ids_and_drops_repeats() -> None:
    tracker = SequenceTracker()
    assert tracker.gap_before("BTC-USDT", 100) is None  # nothing seen yet: no gap
    tracker.advance("BTC-USDT", 100)
    assert tracker.gap_before("BTC-USDT", 101) is None
    assert tracker.gap_before("BTC-USDT", 105) == Gap("BTC-USDT", 101, 104)
    assert Gap("BTC-USDT", 101, 104).size == 4
    assert tracker.is_duplicate("BTC-USDT", 100) and tracker.is_duplicate("BTC-USDT", 7)
    assert not tracker.is_duplicate("ETH-USDT", 100), "per symbol"
    tracker.advance("BTC-USDT", 90)
    assert tracker.last("BTC-USDT") == 100, "the mark never moves back"


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=200))
def test_recent_ids_are_bounded_and_catch_repeats_within_the_window(ids: list[int]) -> None:
    recent = RecentTradeIds(capacity=10)
    window: list[int] = []
    for trade_id in ids:
        new = recent.add("S-T", str(trade_id))
        assert new == (trade_id not in window)
        if new:
            window = [*window, trade_id][-10:]
        assert len(recent) <= 10


@given(st.integers(min_value=0, max_value=100), st.floats(min_value=0, max_value=1))
def test_full_jitter_stays_below_the_capped_exponential(attempt: int, draw: float) -> None:
    delay = full_jitter_delay(attempt, 0.5, 30.0, rand=lambda: draw)
    assert 0 <= delay <= min(30.0, 0.5 * 2**attempt)


def test_full_jitter_grows_then_caps() -> None:
    ceilings = [full_jitter_delay(n, 0.5, 30.0, rand=lambda: 1.0) for n in range(8)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=4.0, burst=2, clock=clock)
    assert bucket.wait_time() == 0
    bucket._tokens -= 2  # two requests spent the burst
    assert bucket.wait_time() == pytest.approx(0.25)
    clock.now = 0.25
    assert bucket.wait_time() == 0


def test_token_bucket_hold_pauses_everyone_for_retry_after() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100.0, burst=100, clock=clock)
    bucket.hold(3.0)
    assert bucket.wait_time() == pytest.approx(3.0)
    clock.now = 3.0
    assert bucket.wait_time() == 0


async def test_token_bucket_take_waits_for_tokens() -> None:
    bucket = TokenBucket(rate=50.0, burst=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(4):
        await bucket.take()
    assert loop.time() - started >= 3 / 50 * 0.9


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    later = retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    assert later == pytest.approx(10.0)


def test_symbols_are_split_into_as_few_connections_as_the_limit_allows() -> None:
    symbols = [f"C{i}-USDT" for i in range(5)]
    assert connection_chunks(symbols, 2) == [symbols[:2], symbols[2:4], symbols[4:]]
    assert connection_chunks(symbols, 10) == [symbols]
