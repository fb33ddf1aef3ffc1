"""On-chain detectors (gas spike, reorg, whale transfer), the token pricing book and the
on-chain stream's price join, without Kafka."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import orjson
import pytest

from processors.alerts import AlertEngine, load_alert_rules
from processors.anomalies.findings import to_anomaly
from processors.anomalies.gas_spike import BlockView, GasSpikeDetector
from processors.anomalies.reorg import ReorgTracker
from processors.anomalies.rules import AnomalyRules, load_anomaly_rules
from processors.anomalies.whale import WhaleWatch
from processors.candle_stream import RawRecord
from processors.exceptions import TokenPricesError
from processors.onchain_stream import OnchainStream, PriceFeed, Source
from processors.pricing import PriceBook, TokenPrices, load_token_prices, parse_token_prices
from schemas.codec import codec_for
from schemas.events import Candle, OnchainBlock, OnchainTransfer

RULES: AnomalyRules = load_anomaly_rules()
PRICES: TokenPrices = load_token_prices()
GWEI = 10**9
MINUTE = 60_000
T0 = 1_700_000_000_000 // MINUTE * MINUTE
BLOCK = codec_for(OnchainBlock)
TRANSFER = codec_for(OnchainTransfer)
CANDLE = codec_for(Candle)


def block_hash(number: int, branch: int = 0) -> str:
    return "0x" + f"{branch:02x}{number:062x}"


def view(number: int, base_fee: int | None, status: str = "new", branch: int = 0) -> BlockView:
    return BlockView(1, number, block_hash(number, branch), T0 + number * 12_000, base_fee, status)


def transfer(
    log_index: int,
    amount: str,
    *,
    token: str = "WETH",
    ts: int = T0,
    block: int = 100,
    removed: bool = False,
    confirmations: int = 1,
    chain_id: int = 1,
) -> Any:
    return TRANSFER.build(
        chain_id=chain_id,
        block=block,
        block_hash=block_hash(block),
        timestamp=ts,
        tx_hash="0x" + f"{log_index:064x}",
        log_index=log_index,
        token="0x" + "ab" * 20,
        token_symbol=token,
        from_address="0x" + "01" * 20,
        to_address="0x" + "02" * 20,
        amount=Decimal(amount),
        usd_value=None,
        confirmations=0 if removed else confirmations,
        removed=removed,
    )


# -- gas spikes ------------------------------------------------------------------------


def calm_fees(count: int) -> list[int]:
    """Base fees wobbling a few percent around 20 gwei (deterministic)."""
    return [20 * GWEI + (i * 7919 % 11 - 5) * GWEI // 10 for i in range(count)]


def test_a_base_fee_tripling_after_calm_blocks_is_a_critical_gas_spike() -> None:
    detector = GasSpikeDetector(RULES.gas_spike)
    for number, fee in enumerate(calm_fees(40)):
        assert detector.update(view(number, fee)) is None
    finding = detector.update(view(40, 60 * GWEI))
    assert finding is not None
    assert finding.kind == "gas_spike" and finding.subject == "chain:1"
    assert finding.severity == "critical"
    assert finding.observed == 60 * GWEI
    assert finding.expected == pytest.approx(20 * GWEI, rel=0.05)
    assert finding.anomaly_id == f"gas_spike:chain:1:{block_hash(40)}"
    assert "3.0x the median" in finding.explanation


def test_a_spike_is_reported_once_per_level_and_a_calm_block_ends_it() -> None:
    detector = GasSpikeDetector(RULES.gas_spike)
    for number, fee in enumerate(calm_fees(40)):
        detector.update(view(number, fee))
    assert detector.update(view(40, 60 * GWEI)) is not None
    assert detector.update(view(41, 62 * GWEI)) is None  # the same spike, same level
    assert detector.update(view(42, 20 * GWEI)) is None  # over
    assert detector.update(view(43, 70 * GWEI)) is not None  # a new spike


def test_a_moderate_rise_below_the_minimum_ratio_is_no_spike_even_on_a_flat_chain() -> None:
    detector = GasSpikeDetector(RULES.gas_spike)
    for number in range(40):
        detector.update(view(number, 20 * GWEI))
    # 1.4x is 6.7 robust sigmas on a flat series (floored sigma 0.05), but below min_ratio 1.5
    assert detector.update(view(40, 28 * GWEI)) is None


def test_confirmed_records_are_not_scored_again_but_reorg_replacements_are() -> None:
    detector = GasSpikeDetector(RULES.gas_spike)
    for number, fee in enumerate(calm_fees(40)):
        detector.update(view(number, fee))
    assert detector.update(view(39, 90 * GWEI, status="confirmed")) is None  # already scored
    assert len(detector.log_fees) == 40
    detector.update(view(39, 20 * GWEI, status="reorged"))
    finding = detector.update(view(39, 90 * GWEI, branch=1))
    assert finding is not None and finding.anomaly_id.endswith(block_hash(39, 1))


def test_gas_state_round_trips_and_blocks_without_base_fee_are_skipped() -> None:
    detector = GasSpikeDetector(RULES.gas_spike)
    for number, fee in enumerate(calm_fees(40)):
        detector.update(view(number, fee))
    assert detector.update(view(40, None)) is None
    restored = GasSpikeDetector(RULES.gas_spike, orjson.loads(orjson.dumps(detector.to_dict())))
    assert restored.update(view(41, 60 * GWEI)) == detector.update(view(41, 60 * GWEI))


# -- reorgs ----------------------------------------------------------------------------


def test_a_run_of_reorged_blocks_is_one_reorg_with_its_depth_and_first_hash_as_id() -> None:
    tracker = ReorgTracker(RULES.reorg)
    assert tracker.update(view(10, GWEI)) is None
    for number in (11, 12, 13):
        assert tracker.update(view(number, GWEI, status="reorged")) is None
    finding = tracker.update(view(11, GWEI, branch=1))
    assert finding is not None
    assert (finding.kind, finding.score, finding.observed) == ("reorg", 3.0, 3.0)
    assert finding.severity == "warning"  # info 1, warning 2, critical 4
    assert finding.anomaly_id == f"reorg:chain:1:{block_hash(11)}"
    assert finding.ts == T0 + 11 * 12_000
    assert tracker.update(view(12, GWEI, branch=1)) is None


@pytest.mark.parametrize(("depth", "severity"), [(1, "info"), (2, "warning"), (5, "critical")])
def test_reorg_severity_grows_with_depth(depth: int, severity: str) -> None:
    tracker = ReorgTracker(RULES.reorg)
    for number in range(depth):
        tracker.update(view(50 + number, GWEI, status="reorged"))
    # the run survives a state round trip (a micro-batch boundary)
    tracker = ReorgTracker(RULES.reorg, orjson.loads(orjson.dumps(tracker.to_dict())))
    finding = tracker.update(view(50, GWEI, branch=2))
    assert finding is not None and finding.severity == severity and finding.score == depth


# -- pricing ---------------------------------------------------------------------------


def test_the_packaged_mapping_maps_wrapped_tokens_and_pegs_stablecoins() -> None:
    assert PRICES.assets["WETH"] == "ETH" and PRICES.assets["WBTC"] == "BTC"
    assert PRICES.fixed_usd == {"USDC": 1.0, "USDT": 1.0, "DAI": 1.0}
    assert PRICES.market_rank("ETH-USD") == ("ETH", 0)
    assert PRICES.market_rank("ETH-USDT") == ("ETH", 1)
    assert PRICES.market_rank("ETH-BTC") is None
    assert PRICES.market_rank("DOGE-USD") is None


def test_a_user_pricing_file_overrides_fields_and_replaces_token_tables() -> None:
    prices = parse_token_prices('[pricing]\nlateness_ms = 5\n[assets]\nweth = "ETH"\n')
    assert prices.pricing.lateness_ms == 5 and prices.pricing.interval == "1m"
    assert prices.assets == {"WETH": "ETH"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('[assets]\nUSDC = "USD"\n', "both in [assets] and [fixed_usd]: USDC"),
        ("[fixed_usd]\nUSDC = 0\n", "must be > 0"),
        ('[assets]\nWETH = "eth"\n', "not an upper-case symbol"),
        ("[pricing]\nhistory = 0\n", "pricing.history"),
        ("[pricing", "not valid TOML"),
    ],
)
def test_a_bad_pricing_file_names_the_field_and_the_reason(text: str, reason: str) -> None:
    with pytest.raises(TokenPricesError, match=r"^mine\.toml: ") as raised:
        parse_token_prices(text, source="mine.toml")
    assert reason in str(raised.value)


def test_the_book_prices_at_or_before_the_event_time_preferring_usd_quotes() -> None:
    book = PriceBook(PRICES)
    book.add("binance", "ETH-USDT", T0 + MINUTE, 2001.0)
    book.add("coinbase", "ETH-USD", T0, 1990.0)
    book.add("coinbase", "ETH-USD", T0 + MINUTE, 2000.0)
    book.add("coinbase", "ETH-USD", T0 + 2 * MINUTE, 2100.0)  # after the transfer
    quote = book.quote("ETH", T0 + MINUTE + 30_000)
    assert quote is not None and (quote.price, quote.exchange, quote.time) == (
        2000.0,
        "coinbase",
        T0 + MINUTE,
    )
    assert book.quote("ETH", T0 - 1) is None  # nothing at or before it
    # USD is preferred while fresh; a stale USD close gives way to a fresh USDT one
    book.add("binance", "ETH-USDT", T0 + 20 * MINUTE, 2500.0)
    late = book.quote("ETH", T0 + 20 * MINUTE)
    assert late is not None and (late.exchange, late.price) == ("binance", 2500.0)
    assert not book.add("kraken", "ETH-EUR", T0, 1800.0)


def test_the_book_waits_for_the_assets_watermark_to_pass_by_the_lateness() -> None:
    book = PriceBook(PRICES)
    lateness = PRICES.pricing.lateness_ms
    book.add("coinbase", "ETH-USD", T0, 2000.0)
    assert not book.ready("ETH", T0)
    book.add("coinbase", "ETH-USD", T0 + lateness, 2000.0)
    assert book.ready("ETH", T0) and not book.ready("ETH", T0 + 1)
    assert not book.ready("BTC", T0)


def test_the_book_keeps_one_close_per_time_and_a_bounded_history() -> None:
    prices = parse_token_prices("[pricing]\nhistory = 3\n")
    book = PriceBook(prices)
    for minute in (4, 0, 1, 2, 3, 3):
        book.add("coinbase", "ETH-USD", T0 + minute * MINUTE, 2000.0 + minute)
    assert book.markets["coinbase:ETH-USD"] == [[T0 + m * MINUTE, 2000.0 + m] for m in (2, 3, 4)]


# -- whale transfers -------------------------------------------------------------------


def priced_book(price: float = 2000.0) -> PriceBook:
    book = PriceBook(PRICES)
    for minute in range(-3, 4):
        book.add("coinbase", "ETH-USD", T0 + minute * MINUTE, price)
    return book


def test_a_weth_transfer_over_the_threshold_is_a_whale_priced_from_the_book() -> None:
    watch, counts = WhaleWatch(RULES.whale_transfer, PRICES, 1), Counter[str]()
    assert watch.observe(transfer(3, "6000", ts=T0 + 10_000), counts) == []
    assert watch.observe(transfer(4, "10", ts=T0 + 10_000), counts) == []
    [whale] = watch.release(priced_book(), T0 + 10_000, counts)
    assert whale.kind == "whale_transfer" and whale.subject == "chain:1"
    assert whale.observed == 12_000_000.0  # 6000 WETH x 2000 USD
    assert whale.severity == "warning" and whale.score == 12.0
    assert (whale.exchange, whale.symbol) == ("coinbase", "ETH-USD")
    assert whale.anomaly_id == f"whale_transfer:chain:1:0x{3:064x}:3"
    assert "6,000 WETH worth $12,000,000" in whale.explanation
    assert counts == {"priced": 2}


def test_stablecoins_are_judged_at_once_and_unmapped_tokens_are_counted() -> None:
    watch, counts = WhaleWatch(RULES.whale_transfer, PRICES, 1), Counter[str]()
    [whale] = watch.observe(transfer(1, "150000000", token="USDC"), counts)
    assert whale.severity == "critical" and whale.exchange is None and whale.symbol is None
    assert watch.observe(transfer(2, "1e12", token="SHIB"), counts) == []
    assert counts == {"priced": 1, "unpriced_unmapped": 1}


def test_a_confirmation_a_removal_and_a_reinclusion_never_flag_a_whale_twice() -> None:
    watch, counts = WhaleWatch(RULES.whale_transfer, PRICES, 1), Counter[str]()
    watch.observe(transfer(3, "6000"), counts)
    assert len(watch.release(priced_book(), T0, counts)) == 1
    assert watch.observe(transfer(3, "6000", confirmations=12), counts) == []
    assert watch.observe(transfer(3, "6000", removed=True), counts) == []
    assert watch.observe(transfer(3, "6000", block=101), counts) == []
    assert watch.release(priced_book(), T0, counts) == []
    assert counts == {"priced": 1, "retracted_whale": 1}


def test_a_transfer_removed_while_waiting_for_a_price_is_dropped() -> None:
    watch, counts = WhaleWatch(RULES.whale_transfer, PRICES, 1), Counter[str]()
    watch.observe(transfer(3, "6000"), counts)
    watch.observe(transfer(3, "6000", removed=True), counts)
    assert watch.pending == [] and watch.release(priced_book(), T0, counts) == []
    assert counts == {"retracted_unpriced": 1}


def test_a_transfer_waits_for_prices_then_without_any_is_counted_unpriced() -> None:
    watch, counts = WhaleWatch(RULES.whale_transfer, PRICES, 1), Counter[str]()
    watch.observe(transfer(3, "6000", token="WBTC"), counts)
    assert watch.release(priced_book(), T0, counts) == []  # no BTC prices: still waiting
    assert len(watch.pending) == 1
    past_wait = T0 + PRICES.pricing.max_wait_ms
    assert watch.release(priced_book(), past_wait, counts) == []
    assert watch.pending == [] and counts == {"unpriced_no_price": 1}


# -- the stream: prices broadcast and joined per partition ----------------------------

TOPICS: dict[str, Source] = {"blocks": "block", "transfers": "transfer", "prices": "price"}


def candle_record(offset: int, minute: int, close: float, symbol: str = "ETH-USD") -> RawRecord:
    candle = CANDLE.build(
        exchange="coinbase",
        symbol=symbol,
        interval="1m",
        open_time=T0 + minute * MINUTE,
        close_time=T0 + (minute + 1) * MINUTE,
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
        quote_volume=close,
        vwap=close,
        trade_count=1,
        buy_volume=1.0,
        sell_volume=0.0,
        final=True,
    )
    return RawRecord("candles", 0, offset, b"coinbase:" + symbol.encode(), CANDLE.encode(candle))


def chain_inputs() -> list[RawRecord]:
    """Prices of minutes 0..5 (ETH 2000 then 3000 from minute 2) and a 6000 WETH
    transfer at minute 1.5, on one partition, in a fixed interleaving."""
    closes = [2000.0, 2000.0, 3000.0, 3000.0, 3000.0, 3000.0]
    candles = [
        candle_record(i, minute, close) for i, (minute, close) in enumerate(enumerate(closes))
    ]
    candles.append(candle_record(99, 0, 5.0, symbol="DOGE-USD"))
    points = PriceFeed(PRICES).points(CANDLE.decode(record.value) for record in candles)
    assert len(points) == len(closes)
    records = [RawRecord("prices", 0, i, key, value) for i, (key, value) in enumerate(points)]
    whale = transfer(3, "6000", ts=T0 + 90_000)
    records.insert(1, RawRecord("transfers", 0, 0, b"1", TRANSFER.encode(whale)))
    return records


def run(stream: OnchainStream, batches: list[list[RawRecord]]) -> list[tuple[bytes, bytes]]:
    state: dict[bytes, Any] = {}
    out: list[tuple[bytes, bytes]] = []
    for batch in batches:
        result = stream.process(batch, state.get)
        # through JSON, as the Faust table stores it
        state.update({k: orjson.loads(orjson.dumps(v)) for k, v in result.states.items()})
        out += result.anomalies
    return out


def test_a_whale_is_priced_with_the_close_at_or_before_its_time_however_batched() -> None:
    stream = OnchainStream(RULES, PRICES, TOPICS)
    records = chain_inputs()
    whole = run(stream, [records])
    one_by_one = run(stream, [[record] for record in records])
    assert whole == one_by_one
    [(key, value)] = whole
    anomaly = orjson.loads(value)
    assert key == b"chain:1" and anomaly["kind"] == "whale_transfer"
    # the close of the 1m candle ending at minute 1 (2000), not a later one (3000)
    assert anomaly["observed"] == 12_000_000.0
    assert anomaly["ts"] == T0 + 90_000


def test_records_already_folded_in_are_skipped_after_a_restart() -> None:
    stream = OnchainStream(RULES, PRICES, TOPICS)
    records = chain_inputs()
    first = stream.process(records, {}.get)
    again = stream.process(records, first.states.get)
    assert again.anomalies == [] and again.skipped == len(records)


def test_bad_and_mis_keyed_chain_records_go_to_the_dlq() -> None:
    stream = OnchainStream(RULES, PRICES, TOPICS)
    good = BLOCK.build(
        chain_id=1,
        number=5,
        hash=block_hash(5),
        parent_hash=block_hash(4),
        timestamp=T0,
        base_fee=GWEI,
        gas_used=1,
        tx_count=1,
        status="new",
        confirmations=1,
    )
    result = stream.process(
        [
            RawRecord("blocks", 0, 0, b"1", b"{not json"),
            RawRecord("blocks", 0, 1, b"2", BLOCK.encode(good)),
            RawRecord("prices", 0, 0, b"ETH", b"[]"),
        ],
        {}.get,
    )
    reasons = [orjson.loads(value)["reason"] for _, value in result.dead_letters]
    assert len(reasons) == 3
    assert "not chain id 1" in reasons[1] and "invalid price point" in reasons[2]


def test_the_default_alert_rules_alert_every_whale_and_chain_health_with_a_cool_down() -> None:
    engine = AlertEngine(load_alert_rules())
    cooldowns: dict[str, int] = {}
    watch, counts = WhaleWatch(RULES.whale_transfer, PRICES, 1), Counter[str]()
    for log_index in (1, 2):
        watch.observe(transfer(log_index, "6000"), counts)
    whales = watch.release(priced_book(), T0, counts)
    fired = [d.alert for w in whales for d in engine.on_anomaly(to_anomaly(w), cooldowns)]
    assert [a.rule for a in fired if a] == ["whale-transfers", "whale-transfers"]
    tracker = ReorgTracker(RULES.reorg)
    reorgs = []
    for start in (10, 20):  # two 2-block reorgs a few blocks apart: the second is cooled down
        tracker.update(view(start, GWEI, status="reorged"))
        tracker.update(view(start + 1, GWEI, status="reorged"))
        reorgs.append(tracker.update(view(start, GWEI, branch=1)))
    decisions = [d for r in reorgs if r for d in engine.on_anomaly(to_anomaly(r), cooldowns)]
    assert [(d.rule, d.alert is not None) for d in decisions] == [
        ("chain-health", True),
        ("chain-health", False),
    ]
