"""The market anomaly detectors, against independent references and hand-made series."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.anomalies.divergence import CrossExchangeAligner
from processors.anomalies.price_jump import CandleView, PriceJumpDetector
from processors.anomalies.rolling import RollingRobust, kth_of_two_sorted
from processors.anomalies.rules import (
    AnomalyRules,
    Thresholds,
    load_anomaly_rules,
    parse_anomaly_rules,
)
from processors.anomalies.stale_feed import FeedClock
from processors.anomalies.volume_spike import VolumeSpikeDetector
from processors.exceptions import AnomalyRuleError

RULES: AnomalyRules = load_anomaly_rules()
MINUTE = 60_000
T0 = 1_700_000_040_000

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=80), st.integers(min_value=1, max_value=30))
@settings(max_examples=300, deadline=None)
def test_rolling_median_and_mad_equal_numpy_over_the_last_window(
    values: list[float], size: int
) -> None:
    window = RollingRobust(size)
    for i, value in enumerate(values):
        window.push(value)
        recent = np.array(values[max(0, i + 1 - size) : i + 1])
        median = float(np.median(recent))
        assert window.median() == pytest.approx(median, abs=1e-9)
        assert window.mad() == pytest.approx(float(np.median(np.abs(recent - median))), abs=1e-6)
    assert RollingRobust(size, window.values()).values() == window.values()


@given(
    st.lists(st.integers(-50, 50), max_size=20),
    st.lists(st.integers(-50, 50), max_size=20),
    st.data(),
)
def test_kth_of_two_sorted_sequences_matches_merging_them(
    first: list[int], second: list[int], data: st.DataObject
) -> None:
    first, second = sorted(first), sorted(second)
    merged = sorted(first + second)
    if not merged:
        return
    k = data.draw(st.integers(0, len(merged) - 1))
    assert (
        kth_of_two_sorted(first.__getitem__, len(first), second.__getitem__, len(second), k)
        == (merged[k])
    )


def test_robust_z_is_floored_on_a_flat_window() -> None:
    window = RollingRobust(10, [1.0] * 10)
    z, center, sigma = window.robust_z(1.5, min_sigma=0.1)
    assert (z, center, sigma) == pytest.approx((5.0, 1.0, 0.1))


def candle(
    minute: int, close: float, volume: float = 10.0, exchange: str = "binance"
) -> CandleView:
    return CandleView(exchange, "BTC-USDT", "1m", MINUTE, T0 + minute * MINUTE, close, volume)


def random_walk(count: int, seed: int, sigma: float = 0.001) -> list[float]:
    rng = random.Random(seed)
    prices, price = [], 100.0
    for _ in range(count):
        price *= math.exp(rng.gauss(0, sigma))
        prices.append(price)
    return prices


def test_a_price_jump_is_found_once_with_its_numbers_and_severity() -> None:
    detector = PriceJumpDetector(RULES.price_jump)
    prices = random_walk(40, seed=1)
    prices[30:] = [p * 1.03 for p in prices[30:]]
    found = [f for i, p in enumerate(prices) if (f := detector.update(candle(i, p)))]
    assert [f.ts for f in found] == [T0 + 30 * MINUTE]
    jump = found[0]
    assert jump.kind == "price_jump" and jump.severity == "critical"
    assert jump.observed == pytest.approx(math.log(prices[30] / prices[29]))
    assert jump.anomaly_id == f"price_jump:binance:BTC-USDT:1m:{T0 + 30 * MINUTE}"
    assert "moved +" in jump.explanation and "robust sigmas" in jump.explanation


def test_price_jump_scales_a_return_across_missing_windows_by_the_square_root() -> None:
    prices = random_walk(30, seed=2)
    gapped, adjacent = PriceJumpDetector(RULES.price_jump), PriceJumpDetector(RULES.price_jump)
    for i, price in enumerate(prices):
        gapped.update(candle(i, price))
        adjacent.update(candle(i, price))
    # 0.9% over nine windows without trades is 0.3% per sqrt(window): ordinary here ...
    assert gapped.update(candle(38, prices[-1] * 1.009)) is None
    assert gapped.returns.values()[-1] == pytest.approx(math.log(1.009) / 3)
    # ... while 0.9% within one window is a jump.
    assert adjacent.update(candle(30, prices[-1] * 1.009)) is not None


def test_price_jump_state_round_trips_and_continues_identically() -> None:
    prices = random_walk(60, seed=3)
    prices[45] *= 1.05
    whole = PriceJumpDetector(RULES.price_jump)
    half = PriceJumpDetector(RULES.price_jump)
    expected = [whole.update(candle(i, p)) for i, p in enumerate(prices)]
    got = [half.update(candle(i, p)) for i, p in enumerate(prices[:30])]
    resumed = PriceJumpDetector.from_dict(RULES.price_jump, half.to_dict())
    got += [resumed.update(candle(i, p)) for i, p in enumerate(prices[30:], start=30)]
    assert got == expected and any(expected)


def test_a_volume_spike_is_found_and_a_drop_is_not() -> None:
    detector = VolumeSpikeDetector(RULES.volume_spike)
    rng = random.Random(4)
    volumes = [10 * math.exp(rng.gauss(0, 0.1)) for _ in range(40)]
    volumes[25], volumes[32] = volumes[25] * 8, volumes[32] / 8
    found = [f for i, v in enumerate(volumes) if (f := detector.update(candle(i, 100.0, v)))]
    assert [f.ts for f in found] == [T0 + 25 * MINUTE]
    assert found[0].observed == volumes[25]
    assert found[0].expected == pytest.approx(10, rel=0.1)
    assert "x the usual" in found[0].explanation


def feed_records(
    feeds: dict[bytes, list[int]],
) -> list[tuple[int, bytes, list[int]]]:
    """(offset, key, [ts]) of every feed's trades merged in time order, one per record."""
    merged = sorted((ts, key) for key, times in feeds.items() for ts in times)
    return [(offset, key, [ts]) for offset, (ts, key) in enumerate(merged)]


def test_a_feed_that_stops_is_flagged_at_each_severity_by_the_others_event_time() -> None:
    busy = list(range(0, 600_000, 500))  # one trade every 0.5 s for 10 minutes
    quiet = [ts for ts in busy if ts < 100_000]  # stops after 100 s
    records = feed_records({b"a:BTC-USDT": busy, b"b:BTC-USDT": quiet})
    clock = FeedClock(RULES.stale_feed, lateness_ms=2_000)
    found, late = clock.observe(records)
    assert late == []
    assert [(f.subject, f.severity) for f in found] == [
        ("b:BTC-USDT", "info"),
        ("b:BTC-USDT", "warning"),
        ("b:BTC-USDT", "critical"),
    ]
    last = quiet[-1]
    # info: 30 x 0.5 s = 15 s = min_silence; warning: 100 x; critical: 300 x the gap.
    assert [f.observed for f in found] == [15_000, 50_000, 150_000]
    assert [f.ts for f in found] == [last + 15_000, last + 50_000, last + 150_000]
    assert found[0].score == pytest.approx(30)


def test_stale_feed_findings_do_not_depend_on_batching_and_skip_re_read_records() -> None:
    rng = random.Random(5)
    busy = sorted(rng.sample(range(0, 900_000), 1_500))
    gappy = [
        ts for ts in sorted(rng.sample(range(0, 900_000), 1_500)) if not 300_000 < ts < 600_000
    ]
    records = feed_records({b"a:X-USDT": busy, b"b:X-USDT": gappy})
    whole, _ = FeedClock(RULES.stale_feed, 2_000).observe(records)
    pieces, state = [], None
    for start in range(0, len(records), 137):
        clock = FeedClock.from_dict(RULES.stale_feed, 2_000, state)
        # Each batch also re-reads the previous one, as after a restart.
        found, _ = clock.observe(records[max(0, start - 137) : start + 137])
        pieces += found
        state = clock.to_dict()
    assert pieces == whole and [f.subject for f in whole] == ["b:X-USDT"] * 3


def test_out_of_order_trades_report_their_lateness_and_never_count_as_gaps() -> None:
    clock = FeedClock(RULES.stale_feed, 0)
    _, late = clock.observe(
        [(0, b"a:X-USDT", [1_000]), (1, b"a:X-USDT", [5_000]), (2, b"a:X-USDT", [4_200])]
    )
    assert late == [800]
    assert clock.feeds[b"a:X-USDT"][:3] == [5_000, 4_000, 3]


def test_every_trade_of_a_batch_record_counts_and_a_re_read_record_none() -> None:
    one_per_record = FeedClock(RULES.stale_feed, 0)
    one_per_record.observe([(n, b"a:X-USDT", [ts]) for n, ts in enumerate([0, 10, 30, 25, 60])])
    batched = FeedClock(RULES.stale_feed, 0)
    _, late = batched.observe([(7, b"a:X-USDT", [0, 10, 30]), (8, b"a:X-USDT", [25, 60])])
    assert late == [5]
    assert batched.feeds == one_per_record.feeds
    assert batched.feeds[b"a:X-USDT"][2] == 5  # trades seen
    again, _ = batched.observe([(8, b"a:X-USDT", [25, 60])])
    assert again == [] and batched.feeds[b"a:X-USDT"][2] == 5


def test_divergence_flags_the_exchange_that_drifts_and_reports_spreads() -> None:
    aligner = CrossExchangeAligner(RULES.divergence, "BTC-USDT", "1m", MINUTE)
    rng = random.Random(6)
    spreads, found = [], []
    for minute in range(40):
        base = 60_000 * math.exp(rng.gauss(0, 0.001))
        for exchange in ("binance", "coinbase", "kraken"):
            close = base * (1 + rng.gauss(0, 1e-4))
            if exchange == "kraken" and minute == 30:
                close *= 1.01
            points, findings, late = aligner.add(exchange, T0 + minute * MINUTE, close)
            spreads += points
            found += findings
            # Window 0 was complete for the two exchanges seen so far when kraken's first
            # candle came: a newly seen exchange joins from the next window.
            assert late == (exchange == "kraken" and minute == 0)
    assert [(f.subject, f.ts) for f in found] == [("kraken:BTC-USDT", T0 + 30 * MINUTE)]
    assert found[0].observed == pytest.approx(100, abs=5) and found[0].severity == "critical"
    at_30 = [p for p in spreads if p.open_time == T0 + 30 * MINUTE]
    assert {p.exchange for p in at_30} == {"binance", "coinbase", "kraken"}
    assert all(p.exchanges == 3 and p.spread_bps == pytest.approx(100, abs=5) for p in at_30)


def test_divergence_windows_do_not_depend_on_how_exchanges_interleave() -> None:
    rng = random.Random(7)
    candles = [
        (
            exchange,
            T0 + minute * MINUTE,
            100 * (1 + rng.gauss(0, 1e-3)) * (1.02 if minute == 25 and exchange == "b" else 1),
        )
        for exchange in ("a", "b")
        for minute in range(35)
        if not (exchange == "a" and minute == 12)  # a window without trades on `a`
    ]

    def run(order: list[tuple[str, int, float]]) -> tuple[list[object], list[object]]:
        aligner = CrossExchangeAligner(RULES.divergence, "X-USDT", "1m", MINUTE)
        spreads, found = [], []
        for exchange, open_time, close in order:
            points, findings, _ = aligner.add(exchange, open_time, close)
            spreads += points
            found += findings
        return sorted(spreads, key=repr), sorted(found, key=repr)

    time_order = sorted(candles, key=lambda c: (c[1], c[0]))
    a_first = sorted(candles, key=lambda c: (c[0], c[1]))  # all of a, then all of b
    assert run(time_order) == run(a_first)
    spreads, found = run(time_order)
    assert {f.ts for f in found} == {T0 + 25 * MINUTE}  # both sides of a two-way gap
    assert T0 + 12 * MINUTE not in {p.open_time for p in spreads}


def test_thresholds_grade_scores_and_must_be_ordered() -> None:
    levels = Thresholds(info=1, warning=2, critical=3)
    assert [levels.severity(s) for s in (0.5, 1, 2.5, 9)] == [None, "info", "warning", "critical"]
    with pytest.raises(ValueError, match="info <= warning <= critical"):
        Thresholds(info=3, warning=2, critical=4)


def test_a_rules_file_overrides_only_what_it_names() -> None:
    rules = parse_anomaly_rules("[price_jump]\nwindow = 30\n")
    assert rules.price_jump.window == 30
    assert rules.price_jump.thresholds == RULES.price_jump.thresholds
    assert rules.divergence == RULES.divergence


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[price_jump\n", "not valid TOML"),
        ("[price_jump]\nmin_history = 500\n", "min_history 500 exceeds window 60"),
        ("[volume_spike]\nthresholds = { info = 9.0 }\n", "info <= warning <= critical"),
        ("[gas]\nwindow = 3\n", "gas"),
    ],
)
def test_a_bad_rules_file_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(AnomalyRuleError, match=reason):
        parse_anomaly_rules(text, source="mine.toml")
