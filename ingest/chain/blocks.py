"""Block headers from `eth_getBlockByNumber` results (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest.chain.exceptions import MalformedRpcDataError
from ingest.chain.hexvalues import field, hash32, quantity


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """What sigflow keeps of a block: enough to follow the chain and describe the block."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int  # epoch ms
    base_fee: int | None
    gas_used: int
    tx_count: int


def parse_block(raw: Any) -> BlockHeader:
    """A header from a block object (with transaction hashes or full transactions)."""
    if not isinstance(raw, dict):
        raise MalformedRpcDataError(f"block is not an object: {raw!r:.200}")
    number = quantity(field(raw, "number", "block"), "number")
    what = f"block {number}"
    transactions = field(raw, "transactions", what)
    if not isinstance(transactions, list):
        raise MalformedRpcDataError(f"{what}: `transactions` is not a list")
    base_fee = raw.get("baseFeePerGas")
    return BlockHeader(
        number=number,
        hash=hash32(field(raw, "hash", what), "hash"),
        parent_hash=hash32(field(raw, "parentHash", what), "parentHash"),
        timestamp=quantity(field(raw, "timestamp", what), "timestamp") * 1000,
        base_fee=None if base_fee is None else quantity(base_fee, "baseFeePerGas"),
        gas_used=quantity(field(raw, "gasUsed", what), "gasUsed"),
        tx_count=len(transactions),
    )
