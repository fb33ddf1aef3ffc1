"""Pure decoding of the chain feed: token lists, Transfer logs, block headers, JSON-RPC."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.chain.blocks import parse_block
from ingest.chain.exceptions import (
    MalformedRpcDataError,
    RpcError,
    RpcTransportError,
    TokenListError,
)
from ingest.chain.rpc import JsonRpcClient, redacted
from ingest.chain.tokens import load_token_list, parse_token_list
from ingest.chain.transfers import TRANSFER_TOPIC, decode_transfer, scaled_amount
from schemas.codec import codec_for
from schemas.events import OnchainTransfer

USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
TOKENS_TOML = f'[[tokens]]\naddress = "{USDC}"\nsymbol = "USDC"\ndecimals = 6\n'
SENDER, RECEIVER = "0x" + "11" * 20, "0x" + "22" * 20


def padded(address: str) -> str:
    return "0x" + "00" * 12 + address[2:]


def transfer_log(raw_amount: int, **changes: Any) -> dict[str, Any]:
    log = {
        "address": USDC.lower(),
        "topics": [TRANSFER_TOPIC, padded(SENDER), padded(RECEIVER)],
        "data": "0x" + raw_amount.to_bytes(32, "big").hex(),
        "blockNumber": "0x10",
        "blockHash": "0x" + "ab" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "logIndex": "0x3",
        "removed": False,
    }
    log.update(changes)
    return log


TOKENS = parse_token_list(Path("tokens.toml"), TOKENS_TOML)


def test_a_toml_and_a_json_token_list_read_the_same() -> None:
    as_json = json.dumps({"tokens": [{"address": USDC, "symbol": "USDC", "decimals": 6}]})
    from_json = parse_token_list(Path("tokens.json"), as_json)
    assert from_json == TOKENS
    assert TOKENS.addresses == [USDC.lower()]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("t.toml", "[[tokens]]\naddress = 'x'\nsymbol = 'A'\ndecimals = 6\n", "token #1: address"),
        ("t.toml", TOKENS_TOML.replace("= 6", "= 31"), "token #1: decimals: Input should be"),
        ("t.toml", TOKENS_TOML * 2, f"token #2: address {USDC.lower()} listed twice"),
        ("t.json", "[]", "`tokens` must be a non-empty list"),
        ("t.json", "{", "not valid JSON"),
        ("t.yaml", "", "unknown format"),
        ("t.json", '{"token": []}', "one top-level key `tokens`"),
    ],
)
def test_a_bad_token_list_names_the_entry_and_the_problem(
    name: str, text: str, message: str
) -> None:
    with pytest.raises(TokenListError) as raised:
        parse_token_list(Path(name), text)
    assert str(raised.value).startswith(f"{name}: ")
    assert message in str(raised.value)


def test_a_missing_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenListError, match="cannot read: No such file"):
        load_token_list(tmp_path / "absent.toml")


def test_a_transfer_log_decodes_to_an_exact_decimal_amount() -> None:
    transfer = decode_transfer(transfer_log(1_500_000_001), TOKENS)
    assert transfer.amount == Decimal("1500.000001")
    assert (transfer.from_address, transfer.to_address) == (SENDER, RECEIVER)
    assert (transfer.block, transfer.log_index, transfer.token_symbol) == (16, 3, "USDC")


@given(raw=st.integers(0, 10**40), decimals=st.integers(0, 30))
def test_scaling_is_exact_and_goes_out_in_plain_notation(raw: int, decimals: int) -> None:
    amount = scaled_amount(raw, decimals)
    assert int(format(amount, "f").replace(".", "")) == raw  # every digit kept
    event = codec_for(OnchainTransfer).struct(
        chain_id=1, block=1, block_hash="0x" + "ab" * 32, timestamp=0, tx_hash="0x" + "cd" * 32,
        log_index=0, token=USDC.lower(), token_symbol="USDC", from_address=SENDER,
        to_address=RECEIVER, amount=amount, confirmations=1,
    )  # fmt: skip
    text = json.loads(codec_for(OnchainTransfer).encode(event))["amount"]
    assert "E" not in text and Decimal(text) == amount


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"data": "0x0102"}, "has 2 data bytes, not 32"),
        ({"topics": [TRANSFER_TOPIC, padded(SENDER)]}, "has 2 topics, not 3"),
        ({"topics": [TRANSFER_TOPIC, padded(SENDER), "0x" + "ff" * 32]}, "not a left-padded"),
        ({"address": "0x" + "99" * 20}, "not in the token list"),
        ({"logIndex": "3"}, "`logIndex` is not a hex quantity"),
        ({"blockHash": None}, "log has no `blockHash`"),
        ({"data": "0x" + "ff" * 32}, "exceeds 46 integer digits"),
    ],
)
def test_a_malformed_log_says_what_is_wrong(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedRpcDataError) as raised:
        decode_transfer(transfer_log(1, **changes), TOKENS)
    assert reason in raised.value.reason


def test_a_block_header_keeps_what_the_feed_publishes() -> None:
    raw = {
        "number": "0x1b4", "hash": "0x" + "AB" * 32, "parentHash": "0x" + "cd" * 32,
        "timestamp": "0x6650b7b0", "baseFeePerGas": "0x7", "gasUsed": "0x5208",
        "transactions": ["0x" + "01" * 32, "0x" + "02" * 32],
    }  # fmt: skip
    header = parse_block(raw)
    assert (header.number, header.hash, header.timestamp) == (
        436,
        "0x" + "ab" * 32,
        0x6650B7B0 * 1000,
    )
    assert (header.base_fee, header.gas_used, header.tx_count) == (7, 21_000, 2)
    assert parse_block({**raw, "baseFeePerGas": None}).base_fee is None
    with pytest.raises(MalformedRpcDataError, match="block 436 has no `parentHash`"):
        parse_block({k: v for k, v in raw.items() if k != "parentHash"})


# ---- JSON-RPC over a fake remote (a third-party node is not ours to run) --------------


def node(replies: list[Any]) -> tuple[httpx.MockTransport, list[Any]]:
    """A transport answering with `replies` in turn (an int is an HTTP status)."""
    seen: list[Any] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        reply = replies.pop(0)
        if isinstance(reply, int):
            return httpx.Response(reply, headers={"retry-after": "0"})
        if callable(reply):
            return httpx.Response(200, json=reply(body))
        return httpx.Response(200, json=reply)

    return httpx.MockTransport(handle), seen


async def test_a_batch_returns_results_in_call_order_whatever_the_reply_order() -> None:
    def reversed_replies(body: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"jsonrpc": "2.0", "id": r["id"], "result": r["params"][0]} for r in body][::-1]

    transport, seen = node([reversed_replies])
    async with JsonRpcClient("http://node", transport=transport) as rpc:
        raw = await rpc.blocks(range(5, 8))
    assert raw == ["0x5", "0x6", "0x7"]
    assert [r["method"] for r in seen[0]] == ["eth_getBlockByNumber"] * 3


async def test_429_and_5xx_are_retried_then_the_call_succeeds() -> None:
    transport, seen = node([429, 503, {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"}])
    async with JsonRpcClient("http://node", transport=transport, retries=3) as rpc:
        assert await rpc.chain_id() == 31337
    assert len(seen) == 3


async def test_a_node_that_stays_down_is_a_transport_error_after_the_retries() -> None:
    transport, _ = node([502, 502, 502])
    async with JsonRpcClient("http://node/key123", transport=transport, retries=2) as rpc:
        with pytest.raises(
            RpcTransportError, match=r"http://node/…: eth_blockNumber: HTTP 502 \(after 3"
        ):
            await rpc.block_number()
    assert "key123" not in redacted("https://mainnet.example/v3/key123")


async def test_a_json_rpc_error_carries_the_node_message_and_is_not_retried() -> None:
    error = {"code": -32005, "message": "query returned more than 10000 results"}
    transport, seen = node([{"jsonrpc": "2.0", "id": 1, "error": error}])
    async with JsonRpcClient("http://node", transport=transport) as rpc:
        with pytest.raises(RpcError, match="eth_getLogs failed: query returned more than 10000"):
            await rpc.transfer_logs(range(1, 2), [USDC])
    assert len(seen) == 1
