"""ERC-20 `Transfer(address indexed from, address indexed to, uint256 value)` logs.

Pure decoding: topics[0] is the event signature hash, topics[1] and topics[2] are the
addresses left-padded to 32 bytes, `data` is the 32-byte big-endian amount. The amount
is scaled by the token's decimals exactly (a `Decimal` built from the integer's digits,
no float and no rounding context).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ingest.chain.exceptions import MalformedRpcDataError
from ingest.chain.hexvalues import address, data, field, hash32, quantity
from ingest.chain.tokens import TokenList

# keccak256("Transfer(address,address,uint256)")
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
# Decimal256(30) in ClickHouse keeps 46 integer digits; a larger amount would fail the
# sink's insert for every row of its batch, so it is rejected here (to the DLQ) instead.
MAX_INTEGER_DIGITS = 46


@dataclass(frozen=True, slots=True)
class TransferLog:
    """One decoded Transfer log, before the follower adds confirmations and status."""

    block: int
    block_hash: str
    tx_hash: str
    log_index: int
    token: str
    token_symbol: str
    from_address: str
    to_address: str
    amount: Decimal


def scaled_amount(raw: int, decimals: int) -> Decimal:
    """`raw / 10**decimals` exactly, with `decimals` fraction digits."""
    digits = tuple(int(d) for d in str(raw))
    return Decimal((0, digits, -decimals))


def _topic_address(topic: str, name: str) -> str:
    if not topic.startswith("0x000000000000000000000000"):
        raise MalformedRpcDataError(f"`{name}` is not a left-padded address: {topic}")
    return address("0x" + topic[26:], name)


def decode_transfer(log: Any, tokens: TokenList) -> TransferLog:
    """A Transfer log of a listed token; `MalformedRpcDataError` says what is wrong."""
    if not isinstance(log, dict):
        raise MalformedRpcDataError(f"log is not an object: {log!r:.200}")
    what = "log"
    token_address = address(field(log, "address", what), "address")
    token = tokens.get(token_address)
    if token is None:
        raise MalformedRpcDataError(f"log of {token_address}, which is not in the token list")
    topics = field(log, "topics", what)
    if not isinstance(topics, list) or len(topics) != 3:
        count = len(topics) if isinstance(topics, list) else "no"
        raise MalformedRpcDataError(
            f"Transfer log of {token.symbol} has {count} topics, not 3 "
            "(an ERC-721 Transfer has 4; not an ERC-20 transfer)"
        )
    signature, sender, receiver = (hash32(t, f"topics[{i}]") for i, t in enumerate(topics))
    if signature != TRANSFER_TOPIC:
        raise MalformedRpcDataError(f"topics[0] is not the Transfer signature: {signature}")
    payload = data(field(log, "data", what), "data")
    if len(payload) != 32:
        raise MalformedRpcDataError(
            f"Transfer log of {token.symbol} has {len(payload)} data bytes, not 32"
        )
    amount = scaled_amount(int.from_bytes(payload, "big"), token.decimals)
    if amount.adjusted() >= MAX_INTEGER_DIGITS:
        raise MalformedRpcDataError(
            f"Transfer amount {amount} {token.symbol} exceeds {MAX_INTEGER_DIGITS} integer digits"
        )
    return TransferLog(
        block=quantity(field(log, "blockNumber", what), "blockNumber"),
        block_hash=hash32(field(log, "blockHash", what), "blockHash"),
        tx_hash=hash32(field(log, "transactionHash", what), "transactionHash"),
        log_index=quantity(field(log, "logIndex", what), "logIndex"),
        token=token.address,
        token_symbol=token.symbol,
        from_address=_topic_address(sender, "topics[1]"),
        to_address=_topic_address(receiver, "topics[2]"),
        amount=amount,
    )
