"""The chain feed against a real EVM node (anvil) and the real Kafka broker.

Tokens are the hand-written Transfer emitter (sigflow.stack.transfer_emitter), deployed
per test; transfers are real transactions from anvil's unlocked dev accounts; reorgs
are forced with `anvil_reorg`. Every test compares what the feed published with what
the node says is canonical.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.chain.checkpoint import topic_partitions
from ingest.chain.ingestor import ChainIngestor
from ingest.chain.rpc import JsonRpcClient
from ingest.chain.tokens import load_token_list
from sigflow.settings import Settings
from sigflow.stack import transfer_emitter
from sigflow.stack.anvil import AnvilNode

pytestmark = pytest.mark.integration

CHAIN_ID = 31337
KEY = b"31337"


@dataclass
class Chain:
    """An anvil node with two freshly deployed tokens and a tokens file naming them."""

    rpc: JsonRpcClient
    accounts: list[str]
    usdc: str
    weth: str
    tokens_file: Path

    async def transfer(self, token: str, raw_amount: int, to: int = 1) -> str:
        return await transfer_emitter.send_transfer(
            self.rpc, token, self.accounts[0], self.accounts[to], raw_amount
        )

    async def head(self) -> int:
        return await self.rpc.block_number()

    async def mine(self, blocks: int) -> None:
        await self.rpc.call("anvil_mine", [hex(blocks)])

    async def canonical(self, start: int) -> dict[int, str]:
        """Block number → hash of the node's chain from `start` to its head."""
        head = await self.head()
        raw = await self.rpc.blocks(range(start, head + 1))
        return {int(b["number"], 16): b["hash"] for b in raw}

    async def canonical_transfers(self, start: int) -> dict[tuple[str, int], str]:
        """(block hash, log index) → tx hash of the listed tokens' Transfer logs."""
        head = await self.head()
        logs = await self.rpc.transfer_logs(range(start, head + 1), [self.usdc, self.weth])
        return {
            (log["blockHash"], int(log["logIndex"], 16)): log["transactionHash"] for log in logs
        }


@pytest.fixture
async def chain(anvil_node: AnvilNode, tmp_path: Path) -> AsyncIterator[Chain]:
    async with JsonRpcClient(anvil_node.url) as rpc:
        accounts = await rpc.call("eth_accounts")
        usdc = await transfer_emitter.deploy(rpc, accounts[0])
        weth = await transfer_emitter.deploy(rpc, accounts[0])
        tokens_file = tmp_path / "tokens.toml"
        tokens_file.write_text(
            f'[[tokens]]\naddress = "{usdc}"\nsymbol = "USDC"\ndecimals = 6\n\n'
            f'[[tokens]]\naddress = "{weth}"\nsymbol = "WETH"\ndecimals = 18\n'
        )
        yield Chain(rpc, accounts, usdc, weth, tokens_file)


def chain_settings(settings: Settings, confirmations: int) -> Settings:
    return settings.model_copy(
        update={
            "chain_confirmations": confirmations,
            "chain_poll_seconds": 0.05,
            "chain_reorg_window": 32,
            "chain_batch_blocks": 20,
        }
    )


class Feed:
    """A `ChainIngestor` running in this event loop, restartable."""

    def __init__(self, settings: Settings, chain: Chain, node: AnvilNode, start: int) -> None:
        self.settings = settings
        self.chain = chain
        self.node = node
        self.start = start
        self.ingestor: ChainIngestor | None = None
        self.task: asyncio.Task[None] | None = None

    def run(self) -> None:
        self.ingestor = ChainIngestor(
            self.settings,
            rpc_url=self.node.url,
            chain_id=CHAIN_ID,
            tokens=load_token_list(self.chain.tokens_file),
            from_block=self.start,
        )
        self.task = asyncio.create_task(self.ingestor.run())

    async def stop(self) -> None:
        assert self.ingestor is not None and self.task is not None
        self.ingestor.stop()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def feed_factory(
    pipeline_settings: Settings, anvil_node: AnvilNode, chain: Chain
) -> AsyncIterator[Callable[[int, int], Feed]]:
    feeds: list[Feed] = []

    def make(confirmations: int, start: int) -> Feed:
        settings = chain_settings(pipeline_settings, confirmations)
        feed = Feed(settings, chain, anvil_node, start)
        feeds.append(feed)
        return feed

    yield make
    for feed in feeds:
        if feed.task is not None and not feed.task.done():
            await feed.stop()


async def records(settings: Settings, name: str) -> list[tuple[bytes, dict[str, Any]]]:
    """(key, value) of every record of a topic, partition by partition, in order."""
    topic = settings.topic(name)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found: list[Any] = []
        async with asyncio.timeout(30):
            while any([await consumer.position(tp) < end[tp] for tp in partitions]):
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    found += batch
    finally:
        await consumer.stop()
    found.sort(key=lambda r: (r.partition, r.offset))
    return [(r.key, json.loads(r.value)) for r in found]


async def wait_for(
    settings: Settings, name: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
) -> list[dict[str, Any]]:
    """The topic's values once `done(values)` holds (polling)."""
    async with asyncio.timeout(timeout):
        while True:
            values = [value for _, value in await records(settings, name)]
            if done(values):
                return values
            await asyncio.sleep(0.2)


def fold(values: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, Any]:
    return {key(value): value for value in values}


def visible_blocks(blocks: list[dict[str, Any]]) -> dict[int, str]:
    latest = fold(blocks, lambda b: b["hash"])
    return {b["number"]: h for h, b in latest.items() if b["status"] != "reorged"}


def visible_transfers(transfers: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    latest = fold(transfers, lambda t: (t["block_hash"], t["log_index"]))
    return {k: t["tx_hash"] for k, t in latest.items() if not t["removed"]}


def assert_no_repeats(blocks: list[dict[str, Any]], transfers: list[dict[str, Any]]) -> None:
    """No record repeats the previous state of its block or transfer."""
    block_state: dict[str, str] = {}
    for b in blocks:
        assert block_state.get(b["hash"]) != b["status"], f"published twice: {b}"
        block_state[b["hash"]] = b["status"]
    transfer_state: dict[tuple[str, int], str] = {}
    for t in transfers:
        key = (t["block_hash"], t["log_index"])
        state = "removed" if t["removed"] else "confirmed" if t["confirmations"] >= 3 else "new"
        assert transfer_state.get(key) != state, f"published twice: {t}"
        transfer_state[key] = state


# ---- the feed ---------------------------------------------------------------------


async def test_transfers_arrive_with_exact_amounts_then_confirm_at_the_depth(
    chain: Chain, feed_factory: Callable[[int, int], Feed]
) -> None:
    start = await chain.head() + 1
    feed = feed_factory(3, start)
    feed.run()
    usdc_tx = await chain.transfer(chain.usdc, 1_500_000_001)  # 1500.000001 USDC
    weth_tx = await chain.transfer(chain.weth, 1_500 * 10**18 + 1, to=2)
    await chain.mine(3)
    settings = feed.settings
    transfers = await wait_for(
        settings, "onchain.transfers", lambda ts: sum(t["confirmations"] >= 3 for t in ts) >= 2
    )
    blocks = await wait_for(
        settings,
        "onchain.blocks",
        lambda bs: len({b["number"] for b in bs if b["status"] == "confirmed"}) >= 3,
    )
    await feed.stop()

    by_tx = {
        t["tx_hash"]: [x for x in transfers if x["tx_hash"] == t["tx_hash"]] for t in transfers
    }
    usdc, weth = by_tx[usdc_tx], by_tx[weth_tx]
    assert usdc[-1]["amount"] == "1500.000001" and usdc[-1]["token_symbol"] == "USDC"
    assert weth[-1]["amount"] == "1500.000000000000000001" and weth[-1]["token_symbol"] == "WETH"
    assert Decimal(weth[-1]["amount"]) * 10**18 == 1_500 * 10**18 + 1
    assert usdc[-1]["from_address"] == chain.accounts[0]
    assert usdc[-1]["to_address"] == chain.accounts[1]
    assert weth[-1]["to_address"] == chain.accounts[2]
    for records_of_one in (usdc, weth):
        assert [r["removed"] for r in records_of_one] == [False] * len(records_of_one)
        assert records_of_one[-1]["confirmations"] >= 3
        assert all(r["confirmations"] < 3 for r in records_of_one[:-1])
        assert len(records_of_one) <= 2  # new (if seen early), then confirmed
    # every block from the start: new (when seen before the depth), then confirmed once
    canonical = await chain.canonical(start)
    block_hashes = {b["hash"] for b in blocks}
    by_block = {b["number"]: b for b in blocks if b["status"] == "confirmed"}
    for number in range(start, start + 3):
        assert by_block[number]["hash"] == canonical[number]
        assert by_block[number]["confirmations"] >= 3
        assert by_block[number]["parent_hash"] == (
            canonical.get(number - 1) or by_block[number]["parent_hash"]
        )
    assert block_hashes <= set(canonical.values())
    assert {key for key, _ in await records(settings, "onchain.transfers")} == {KEY}
    assert {key for key, _ in await records(settings, "onchain.blocks")} == {KEY}
    assert_no_repeats(blocks, transfers)
