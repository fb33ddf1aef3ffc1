"""Every exchange adapter against the documented messages captured as fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from ingest.exchanges import EXCHANGE_MAP, adapter_class
from ingest.exchanges.base import ExchangeAdapter, PingStyle
from ingest.exchanges.exceptions import (
    MalformedMessageError,
    UnknownExchangeError,
    UnknownSymbolError,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "exchanges"


def expectations(exchange: str) -> dict[str, Any]:
    return json.loads((FIXTURES / exchange / "expected.json").read_text())


def message_cases() -> list[Any]:
    return [
        pytest.param(exchange, name, outcome, id=f"{exchange}/{name}")
        for exchange in EXCHANGE_MAP
        for name, outcome in expectations(exchange)["messages"].items()
    ]


def rest_cases() -> list[Any]:
    return [
        pytest.param(exchange, name, outcome, id=f"{exchange}/{name}")
        for exchange in EXCHANGE_MAP
        for name, outcome in expectations(exchange)["rest"].items()
    ]


def adapter_for(exchange: str) -> tuple[ExchangeAdapter, int]:
    expected = expectations(exchange)
    return EXCHANGE_MAP[exchange](expected["symbols"]), expected["received_ts"]


def as_dicts(trades: list[Any]) -> list[dict[str, Any]]:
    return [msgspec.structs.asdict(trade) for trade in trades]


@pytest.mark.parametrize("exchange", EXCHANGE_MAP)
def test_every_adapter_has_fixtures_for_each_message_kind(exchange: str) -> None:
    kinds = {outcome["kind"] for outcome in expectations(exchange)["messages"].values()}
    assert {"trades", "ack", "unknown", "malformed"} <= kinds
    assert expectations(exchange)["rest"], "a REST backfill answer is needed too"
    listed = set(expectations(exchange)["messages"]) | set(expectations(exchange)["rest"])
    on_disk = {p.name for p in (FIXTURES / exchange).iterdir()} - {"expected.json", "README.md"}
    assert listed == on_disk, "every fixture file has an expected outcome"


@pytest.mark.parametrize(("exchange", "name", "outcome"), message_cases())
def test_documented_message_parses_to_its_expected_outcome(
    exchange: str, name: str, outcome: dict[str, Any]
) -> None:
    adapter, received_ts = adapter_for(exchange)
    raw = (FIXTURES / exchange / name).read_bytes()
    if outcome["kind"] == "malformed":
        with pytest.raises(MalformedMessageError):
            adapter.parse(raw, received_ts)
        return
    if outcome["kind"] == "unknown_symbol":
        with pytest.raises(UnknownSymbolError):
            adapter.parse(raw, received_ts)
        return
    parsed = adapter.parse(raw, received_ts)
    assert parsed.kind == outcome["kind"]
    assert as_dicts(parsed.trades) == outcome.get("trades", [])


@pytest.mark.parametrize(("exchange", "name", "outcome"), rest_cases())
def test_documented_rest_answer_parses_to_trades(
    exchange: str, name: str, outcome: dict[str, Any]
) -> None:
    adapter, received_ts = adapter_for(exchange)
    body = (FIXTURES / exchange / name).read_bytes()
    trades = adapter.parse_backfill(outcome["symbol"], body, received_ts)
    assert as_dicts(trades) == outcome["trades"]


@pytest.mark.parametrize("exchange", EXCHANGE_MAP)
def test_symbols_round_trip_and_unknown_ones_are_refused(exchange: str) -> None:
    adapter = EXCHANGE_MAP[exchange](["BTC-USDT", "ETH-BTC"])
    for symbol in ("BTC-USDT", "ETH-BTC"):
        assert adapter.symbols.to_normalized(adapter.symbols.to_exchange(symbol)) == symbol
    with pytest.raises(UnknownSymbolError, match="not a subscribed symbol"):
        adapter.symbols.to_normalized("XRPUSDT")
    with pytest.raises(UnknownSymbolError, match="BASE-QUOTE"):
        EXCHANGE_MAP[exchange](["BTCUSDT"])


@pytest.mark.parametrize("exchange", EXCHANGE_MAP)
def test_subscribe_messages_respect_the_per_message_limit_and_cover_every_symbol(
    exchange: str,
) -> None:
    cls = EXCHANGE_MAP[exchange]
    symbols = [f"C{i}-USDT" for i in range(cls.max_symbols_per_subscribe * 2 + 1)]
    adapter = cls(symbols)
    messages = adapter.subscribe_messages(symbols)
    for message in messages:
        assert orjson.loads(message)  # valid JSON
    natives = [adapter.symbols.to_exchange(s) for s in symbols]
    with_symbols = [m for m in messages if any(n.lower() in m.lower() for n in natives)]
    assert len(with_symbols) == 3, "others subscribe to symbol-less channels (heartbeats)"
    text = "".join(with_symbols)
    assert all(native.lower() in text.lower() for native in natives)


@pytest.mark.parametrize("exchange", EXCHANGE_MAP)
def test_adapter_declares_its_limits_and_keepalive(exchange: str) -> None:
    cls = EXCHANGE_MAP[exchange]
    assert cls.id == exchange
    assert cls.ws_url.startswith("wss://") and cls.rest_url.startswith("https://")
    assert cls.max_symbols_per_connection >= cls.max_symbols_per_subscribe >= 1
    assert cls.ping_interval > 0 and cls.rest_rate_per_second > 0 and cls.rest_burst >= 1
    if cls.ping_style is PingStyle.MESSAGE:
        assert cls(["BTC-USDT"]).ping_message(), "JSON, or plain text where documented (OKX)"
    adapter = cls(["BTC-USDT"])
    if cls.sequential_trade_ids:
        assert adapter.backfill_request("BTC-USDT", 10, 20, after_ms=1_700_000_000_000)
    else:
        assert adapter.recent_trades_request("BTC-USDT") is not None


def test_binance_backfill_pages_by_trade_id_without_an_api_key() -> None:
    adapter = EXCHANGE_MAP["binance"](["BTC-USDT"])
    request = adapter.backfill_request("BTC-USDT", 101, 5000)
    assert request is not None
    assert request.path == "/api/v3/historicalTrades"
    assert request.params == {"symbol": "BTCUSDT", "fromId": 101, "limit": 1000}
    small = adapter.backfill_request("BTC-USDT", 101, 103)
    assert small is not None and small.params["limit"] == 3


def test_bybit_outage_request_asks_for_the_spot_maximum_of_recent_trades() -> None:
    request = EXCHANGE_MAP["bybit"](["BTC-USDT"]).recent_trades_request("BTC-USDT")
    assert request.path == "/v5/market/recent-trade"
    assert request.params == {"category": "spot", "symbol": "BTCUSDT", "limit": 60}


def test_bybit_refused_rest_answer_is_an_error_not_an_empty_page() -> None:
    from ingest.exchanges.exceptions import BackfillError

    adapter = EXCHANGE_MAP["bybit"](["BTC-USDT"])
    with pytest.raises(BackfillError, match="10001"):
        adapter.parse_backfill(
            "BTC-USDT", b'{"retCode": 10001, "retMsg": "params error", "result": {}}', 0
        )


def test_unknown_exchange_is_a_clear_error() -> None:
    with pytest.raises(UnknownExchangeError, match="choose from binance, bybit"):
        adapter_class("mtgox")


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2019-08-14T20:42:27.265Z", 1565815347265),
        ("2023-02-09T20:32:50.714964855Z", 1675974770714),  # nanoseconds: truncated
        ("2023-09-25T07:49:37.708706Z", 1695628177708),
        ("2023-09-25T09:49:37.7+02:00", 1695628177700),
        ("2021-05-31T09:59:59Z", 1622455199000),
    ],
)
def test_rfc3339_times_become_epoch_milliseconds(text: str, ms: int) -> None:
    from ingest.exchanges.timestamps import rfc3339_to_ms

    assert rfc3339_to_ms(text) == ms


@pytest.mark.parametrize("text", ["yesterday", "2023-02-09 20:32:50", "2023-02-09T20:32:50.1", ""])
def test_times_without_a_zone_or_not_rfc3339_are_refused(text: str) -> None:
    from ingest.exchanges.timestamps import rfc3339_to_ms

    with pytest.raises(ValueError, match="RFC 3339"):
        rfc3339_to_ms(text)


def test_coinbase_subscribes_trades_and_heartbeats_one_channel_per_message() -> None:
    adapter = EXCHANGE_MAP["coinbase"](["BTC-USD", "ETH-USD"])
    messages = [orjson.loads(m) for m in adapter.subscribe_messages(adapter.symbols.normalized)]
    assert messages == [
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"},
        {"type": "subscribe", "channel": "heartbeats"},
    ]
    request = adapter.recent_trades_request("ETH-USD")
    assert request.path == "/api/v3/brokerage/market/products/ETH-USD/ticker"
    assert request.params == {"limit": 1000}


def test_kraken_backfill_pages_by_time_from_the_last_published_trade() -> None:
    adapter = EXCHANGE_MAP["kraken"](["BTC-USD", "ETH-BTC"])
    request = adapter.backfill_request("BTC-USD", 101, 5000, after_ms=1_688_669_597_827)
    assert request is not None and request.path == "/0/public/Trades"
    assert request.params == {"pair": "XBTUSD", "since": 1_688_669_597_826_999_999, "count": 1000}
    assert adapter.backfill_request("ETH-BTC", 1, 2, after_ms=5).params["pair"] == "ETHXBT"
    assert adapter.backfill_request("BTC-USD", 1, 2) is None, "no time: no cursor to start from"


def test_kraken_rest_error_or_row_without_trade_id_is_not_an_empty_page() -> None:
    from ingest.exchanges.exceptions import BackfillError

    adapter = EXCHANGE_MAP["kraken"](["BTC-USD"])
    with pytest.raises(BackfillError, match="Too many requests"):
        adapter.parse_backfill("BTC-USD", b'{"error": ["EGeneral:Too many requests"]}', 0)
    old_row = b'{"error": [], "result": {"XXBTZUSD": [["1.0", "2.0", 1.5, "b", "m", ""]]}}'
    with pytest.raises(MalformedMessageError):
        adapter.parse_backfill("BTC-USD", old_row, 0)
