"""The fast codec accepts exactly what the pydantic contract accepts, with reasons."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.codec import codec_for
from schemas.events import Candle, DeadLetter, OnchainBlock, OnchainTransfer, Trade
from schemas.exceptions import SchemaError

TRADE = {
    "exchange": "coinbase",
    "symbol": "BTC-USD",
    "trade_id": "1",
    "price": 100.5,
    "size": 0.25,
    "side": "buy",
    "ts": 1_700_000_000_000,
    "received_ts": 1_700_000_000_005,
}


def test_valid_trade_round_trips_byte_for_byte() -> None:
    codec = codec_for(Trade)
    raw = msgspec.json.encode(TRADE)
    assert codec.encode(codec.decode(raw)) == raw


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"symbol": "BTCUSD"}, "$.symbol"),
        ({"exchange": "Coinbase"}, "$.exchange"),
        ({"price": 0}, "$.price"),
        ({"size": -1}, "$.size"),
        ({"side": "bid"}, "$.side"),
        ({"ts": -5}, "$.ts"),
        ({"trade_id": ""}, "$.trade_id"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_invalid_trade_is_rejected_with_the_field_named(
    change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(SchemaError) as error:
        codec_for(Trade).decode(msgspec.json.encode({**TRADE, **change}))
    assert reason in error.value.reason


def test_missing_field_and_broken_json_have_reasons() -> None:
    codec = codec_for(Trade)
    missing = {k: v for k, v in TRADE.items() if k != "price"}
    with pytest.raises(SchemaError, match="missing required field `price`"):
        codec.decode(msgspec.json.encode(missing))
    with pytest.raises(SchemaError, match="not valid JSON"):
        codec.decode(b"{not json")
    with pytest.raises(SchemaError, match="empty record value"):
        codec.decode(None)


@given(
    price=st.floats(allow_nan=False, allow_infinity=False, width=64),
    side=st.sampled_from(["buy", "sell", "BUY", "x"]),
    symbol=st.sampled_from(["BTC-USD", "btc-usd", "ETH-USDT", "BTCUSD", "A-B"]),
)
def test_codec_and_pydantic_model_agree_on_what_is_valid(
    price: float, side: str, symbol: str
) -> None:
    record = {**TRADE, "price": price, "side": side, "symbol": symbol}
    try:
        Trade.model_validate(record)
        pydantic_ok = True
    except ValidationError:
        pydantic_ok = False
    try:
        codec_for(Trade).decode(msgspec.json.encode(record))
        codec_ok = True
    except SchemaError:
        codec_ok = False
    assert codec_ok == pydantic_ok


def test_every_contract_model_has_a_codec_with_the_same_fields() -> None:
    for model in (Trade, Candle, OnchainBlock, OnchainTransfer, DeadLetter):
        struct = codec_for(model).struct
        assert set(struct.__struct_fields__) == set(model.model_fields)


def test_transfer_amount_stays_an_exact_decimal() -> None:
    codec = codec_for(OnchainTransfer)
    transfer = codec.build(
        chain_id=1,
        block=10,
        block_hash="0x" + "a" * 64,
        timestamp=1,
        tx_hash="0x" + "b" * 64,
        log_index=0,
        token="0x" + "c" * 40,
        token_symbol="USDC",
        from_address="0x" + "d" * 40,
        to_address="0x" + "e" * 40,
        amount=Decimal("123456789.123456789012345678"),
        confirmations=0,
    )
    assert transfer.amount == Decimal("123456789.123456789012345678")
    assert b'"amount":"123456789.123456789012345678"' in codec.encode(transfer)
