"""Alert rules, the event-time cool-down, and the alert and cross-exchange stream shells."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.alert_stream import AlertStream
from processors.alerts import AlertEngine, load_alert_rules, parse_alert_rules
from processors.anomalies.findings import Finding, anomaly_record
from processors.anomalies.rules import load_anomaly_rules
from processors.candle_stream import RawRecord
from processors.cross_stream import CrossStream
from processors.exceptions import AlertRuleError
from schemas.codec import codec_for
from schemas.events import Candle, Signal

MINUTE = 60_000
T0 = 1_700_000_040_000
SOURCES: dict[str, Any] = {"s.signals": "signal", "s.anomalies": "anomaly"}

RULES = """
[[rules]]
id = "big-moves"
source = "anomaly"
kinds = ["price_jump"]
min_severity = "warning"
cooldown = "15m"

[[rules]]
id = "btc-bullish"
source = "signal"
symbols = ["BTC-USDT"]
directions = [1]
min_strength = 0.5
severity = "warning"
"""


def jump(
    minute: int,
    severity: str = "critical",
    subject: str = "binance:BTC-USDT",
    interval: str | None = "1m",
    kind: str = "price_jump",
) -> Finding:
    exchange, symbol = subject.split(":")
    return Finding(
        kind=kind,
        subject=subject,
        exchange=exchange,
        symbol=symbol,
        interval=interval,
        ts=T0 + minute * MINUTE,
        score=9.3,
        severity=severity,
        observed=0.031,
        expected=0.0,
        explanation="1m return +3.1% is 9.3 robust sigmas from the median",
    )


def anomaly_records(findings: list[Finding], first_offset: int = 0) -> list[RawRecord]:
    return [
        RawRecord("s.anomalies", 0, first_offset + i, *anomaly_record(f))
        for i, f in enumerate(findings)
    ]


def signal_record(offset: int, direction: int, strength: float) -> RawRecord:
    codec = codec_for(Signal)
    signal = codec.build(
        exchange="binance",
        symbol="BTC-USDT",
        interval="1m",
        open_time=T0,
        rule="ema_cross_12_26",
        direction=direction,
        strength=strength,
        price=60_001.0,
        explanation="EMA 12 crossed above EMA 26",
    )
    return RawRecord("s.signals", 0, offset, b"binance:BTC-USDT", codec.encode(signal))


def stream() -> AlertStream:
    return AlertStream(AlertEngine(parse_alert_rules(RULES)), SOURCES)


def test_the_cool_down_keeps_one_alert_per_storm_in_event_time() -> None:
    state: dict[bytes, Any] = {}
    minutes = [0, 1, 5, 14, 15, 16, 40]
    result = stream().process(anomaly_records([jump(m) for m in minutes]), state.get)
    alerts = [orjson.loads(value) for _, value in result.alerts]
    assert [a["ts"] for a in alerts] == [T0, T0 + 15 * MINUTE, T0 + 40 * MINUTE]
    assert result.fired["big-moves"] == 3 and result.suppressed["big-moves"] == 4
    first = alerts[0]
    assert first["alert_id"] == f"big-moves:price_jump:binance:BTC-USDT:1m:{T0}"
    assert first["severity"] == "critical" and first["score"] == 9.3
    assert first["title"] == "Price jump on binance:BTC-USDT (critical, score 9.3)"
    assert {key for key, _ in result.alerts} == {b"big-moves"}


def test_cool_down_state_survives_batches_and_re_read_records_change_nothing() -> None:
    findings = [jump(m) for m in (0, 1, 5, 14, 15, 16, 40)]
    records = anomaly_records(findings)
    whole = stream().process(records, {}.get)
    state: dict[bytes, Any] = {}
    alerts = []
    for start in range(0, len(records), 2):
        # Each batch re-reads the one before, as after a restart before a commit.
        result = stream().process(records[max(0, start - 2) : start + 2], state.get)
        state.update(result.states)
        alerts += result.alerts
    assert alerts == whole.alerts


def test_cool_downs_are_per_subject_and_filters_apply() -> None:
    findings = [jump(0), jump(1, subject="coinbase:BTC-USDT"), jump(2, severity="info")]
    result = stream().process(anomaly_records(findings), {}.get)
    assert [orjson.loads(v)["subject"] for _, v in result.alerts] == [
        "binance:BTC-USDT",
        "coinbase:BTC-USDT",
    ]


def test_an_interval_filter_keeps_finer_candles_from_taking_the_cool_down() -> None:
    rules = """
[[rules]]
id = "hourly-moves"
source = "anomaly"
kinds = ["price_jump", "stale_feed"]
intervals = ["1h"]
cooldown = "15m"
"""
    findings = [
        jump(0, interval="1s"),  # another interval: neither fires nor takes the cool-down
        jump(1, interval="1h"),
        jump(2, interval=None, kind="stale_feed"),  # scored on no candle: not filtered
    ]
    result = AlertStream(AlertEngine(parse_alert_rules(rules)), SOURCES).process(
        anomaly_records(findings), {}.get
    )
    alerts = [orjson.loads(v) for _, v in result.alerts]
    assert [(a["kind"], a["ts"]) for a in alerts] == [
        ("price_jump", T0 + MINUTE),
        ("stale_feed", T0 + 2 * MINUTE),
    ]
    assert result.suppressed["hourly-moves"] == 0


def test_a_rule_on_an_interval_the_processor_does_not_build_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text('[[rules]]\nid = "a"\nsource = "signal"\nintervals = ["1m", "4h"]\n')
    assert load_alert_rules(path, built_intervals=["1m", "4h"])[0].intervals == ("1m", "4h")
    with pytest.raises(AlertRuleError, match=r"rule 'a': the processor builds no 4h candles"):
        load_alert_rules(path, built_intervals=["1s", "1m", "1h"])


def test_signal_rules_filter_on_direction_and_strength() -> None:
    records = [signal_record(0, 1, 0.9), signal_record(1, -1, 0.9), signal_record(2, 1, 0.2)]
    result = stream().process(records, {}.get)
    [alert] = [orjson.loads(v) for _, v in result.alerts]
    assert alert["alert_id"] == f"btc-bullish:signal:ema_cross_12_26:binance:BTC-USDT:1m:{T0}"
    assert alert["severity"] == "warning" and alert["direction"] == 1
    assert alert["price"] == 60_001.0 and alert["source"] == "signal"


def test_malformed_sources_go_to_the_dead_letter_queue() -> None:
    result = stream().process([RawRecord("s.anomalies", 0, 0, b"x", b"{")], {}.get)
    [(_, letter)] = result.dead_letters
    assert orjson.loads(letter)["error_kind"] == "schema" and not result.alerts


def test_the_packaged_alert_rules_load() -> None:
    assert [rule.id for rule in load_alert_rules()] == [
        "market-anomalies",
        "whale-transfers",
        "chain-health",
        "strong-signals",
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('[[rules]]\nid = "a"\nsource = "anomaly"\nkinds = ["jump"]\n', "unknown anomaly kind"),
        ('[[rules]]\nid = "a"\nsource = "signal"\nmin_severity = "warning"\n', "do not apply"),
        ('[[rules]]\nid = "a"\nsource = "anomaly"\ncooldown = "5 minutes"\n', "duration"),
        (
            '[[rules]]\nid = "a"\nsource = "anomaly"\n[[rules]]\nid = "a"\nsource = "signal"\n',
            "duplicate",
        ),
        ('[[rules]]\nid = "A!"\nsource = "anomaly"\n', "rule #1"),
        ('[[rules]]\nid = "a"\nsource = "signal"\nintervals = ["1 hour"]\n', "candle interval"),
    ],
)
def test_a_bad_alert_rules_file_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(AlertRuleError, match=reason):
        parse_alert_rules(text, source="alerts.toml")


def candle_record(offset: int, exchange: str, minute: int, close: float) -> RawRecord:
    codec = codec_for(Candle)
    candle = codec.build(
        exchange=exchange, symbol="BTC-USDT", interval="1m", open_time=T0 + minute * MINUTE,
        close_time=T0 + (minute + 1) * MINUTE, open=close, high=close, low=close, close=close,
        volume=1.0, quote_volume=close, vwap=close, trade_count=1, buy_volume=1.0,
        sell_volume=0.0, final=True,
    )  # fmt: skip
    return RawRecord("by-symbol", 0, offset, b"BTC-USDT", codec.encode(candle))


def test_cross_stream_publishes_spreads_as_indicators_and_skips_re_read_candles() -> None:
    records = [
        candle_record(2 * m + i, exchange, m, 100.0 + i)
        for m in range(3)
        for i, exchange in enumerate(("binance", "coinbase"))
    ]
    cross = CrossStream(load_anomaly_rules().divergence)
    state: dict[bytes, Any] = {}
    first = cross.process(records[:4], state.get)
    state.update(first.states)
    again = cross.process(records, state.get)
    assert again.skipped == 4
    spreads = [(key, orjson.loads(value)) for key, value in first.indicators + again.indicators]
    # A window is evaluated as soon as both exchanges' candles for it are in.
    assert [(key, s["open_time"]) for key, s in spreads] == [
        (f"{exchange}:BTC-USDT".encode(), T0 + m * MINUTE)
        for m in range(3)
        for exchange in ("binance", "coinbase")
    ]
    assert spreads[1][1]["values"] == {
        "xex_deviation_bps": pytest.approx(1 / 100.5 * 1e4 / 2),
        "xex_spread_bps": pytest.approx(1 / 100.5 * 1e4),
        "xex_exchanges": 2.0,
    }
    bad = cross.process([RawRecord("by-symbol", 0, 9, b"ETH-USDT", records[0].value)], {}.get)
    assert "not the symbol" in orjson.loads(bad.dead_letters[0][1])["reason"]


def test_cross_stream_reads_a_batched_record_and_dead_letters_only_its_bad_elements() -> None:
    singles = [candle_record(0, exchange, 0, 100.0 + i) for i, exchange in enumerate(("a", "b"))]
    other = candle_record(0, "c", 0, 50.0)
    wrong = other.value.replace(b'"BTC-USDT"', b'"ETH-USDT"')  # type: ignore[union-attr]
    batch = b"[" + b",".join([singles[0].value, wrong, singles[1].value]) + b"]"  # type: ignore[list-item]
    cross = CrossStream(load_anomaly_rules().divergence)
    result = cross.process([RawRecord("by-symbol", 0, 0, b"BTC-USDT", batch)], {}.get)
    assert result.candles == 2
    assert [orjson.loads(v)["values"]["xex_exchanges"] for _, v in result.indicators] == [2.0, 2.0]
    [letter] = [orjson.loads(value) for _, value in result.dead_letters]
    assert "not the symbol" in letter["reason"]
    assert orjson.loads(letter["raw"])["symbol"] == "ETH-USDT"


def test_the_readme_alert_rules_example_loads() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if "source = " in b]
    rules = [rule for block in blocks for rule in parse_alert_rules(block, source="README.md")]
    by_id = {rule.id: rule for rule in rules}
    assert by_id["btc-bullish"].intervals == ("15m", "1h")
    assert by_id["market-anomalies"].cooldown == "15m"
