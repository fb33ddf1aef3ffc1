"""A minimal ERC-20-style contract for a local node, written in EVM bytecode by hand.

No Solidity compiler is needed: the contract only emits the standard event
`Transfer(address indexed from, address indexed to, uint256 value)` (a LOG3 with the
Transfer topic), which is all the chain feed reads. Calldata is `to` (32 bytes,
left-padded) followed by the log's data; a 32-byte amount gives a standard ERC-20
transfer, any other length a malformed one (for dead-letter tests). `from` is the caller.

Runtime code, opcode by opcode (stack top on the left):

    60 20      PUSH1 0x20        32
    36         CALLDATASIZE      size, 32
    03         SUB               n = size - 32              (length of the log data)
    80         DUP1              n, n
    60 20      PUSH1 0x20        32, n, n
    60 00      PUSH1 0x00        0, 32, n, n
    37         CALLDATACOPY      memory[0:n] = calldata[32:32+n]      → n
    60 00      PUSH1 0x00        0, n
    35         CALLDATALOAD      to, n                      (calldata[0:32])
    33         CALLER            from, to, n
    7f <32 B>  PUSH32 topic      topic, from, to, n         (keccak of the signature)
    83         DUP4              n, topic, from, to, n
    60 00      PUSH1 0x00        0, n, topic, from, to, n
    a3         LOG3              log(memory[0:n], topic, from, to)    → n
    00         STOP

Init code copies the runtime into memory and returns it:

    60 34      PUSH1 0x34        runtime length (52 bytes)
    80         DUP1              52, 52
    60 0b      PUSH1 0x0b        11 (init code length: where the runtime starts), 52, 52
    60 00      PUSH1 0x00        0, 11, 52, 52
    39         CODECOPY          memory[0:52] = code[11:63]           → 52
    60 00      PUSH1 0x00        0, 52
    f3         RETURN            return memory[0:52]
"""

from __future__ import annotations

import asyncio
from typing import Any

from ingest.chain.rpc import JsonRpcClient
from ingest.chain.transfers import TRANSFER_TOPIC

RUNTIME = (
    "6020" "36" "03" "80" "6020" "6000" "37" "6000" "35" "33"
    "7f" + TRANSFER_TOPIC[2:] + "83" "6000" "a3" "00"
)  # fmt: skip
INIT = "6034" "80" "600b" "6000" "39" "6000" "f3"  # fmt: skip
assert len(RUNTIME) // 2 == 0x34 and len(INIT) // 2 == 0x0B
INIT_CODE = "0x" + INIT + RUNTIME


def transfer_calldata(to: str, data: bytes) -> str:
    """Calldata making the contract log a Transfer to `to` with `data` as the log data."""
    return "0x" + "00" * 12 + to.lower().removeprefix("0x") + data.hex()


async def receipt(rpc: JsonRpcClient, tx_hash: str, timeout: float = 10.0) -> dict[str, Any]:
    """The mined transaction's receipt (anvil mines at once unless told otherwise)."""
    async with asyncio.timeout(timeout):
        while True:
            found = await rpc.call("eth_getTransactionReceipt", [tx_hash])
            if found is not None:
                if found.get("status") != "0x1":
                    raise RuntimeError(f"transaction {tx_hash} reverted")
                return dict(found)
            await asyncio.sleep(0.02)


async def deploy(rpc: JsonRpcClient, sender: str) -> str:
    """Deploy one emitter from an unlocked account; its address."""
    tx_hash = await rpc.call("eth_sendTransaction", [{"from": sender, "data": INIT_CODE}])
    return str((await receipt(rpc, tx_hash))["contractAddress"]).lower()


async def send_transfer(
    rpc: JsonRpcClient, token: str, sender: str, to: str, raw_amount: int
) -> str:
    """Send `raw_amount` base units of `token` from `sender` to `to`; the tx hash."""
    return await send_log(rpc, token, sender, to, raw_amount.to_bytes(32, "big"))


async def send_log(rpc: JsonRpcClient, token: str, sender: str, to: str, data: bytes) -> str:
    """A Transfer log with arbitrary data (32 bytes: a real transfer); the tx hash."""
    call = {"from": sender, "to": token, "data": transfer_calldata(to, data), "gas": "0x30000"}
    return str(await rpc.call("eth_sendTransaction", [call]))
