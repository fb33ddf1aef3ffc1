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
from conftest import Roles

from ingest.chain.checkpoint import topic_partitions
from ingest.chain.ingestor import ChainIngestor
from ingest.chain.rpc import JsonRpcClient
from ingest.chain.tokens import load_token_list
from sigflow.roles import migrate
from sigflow.settings import Settings, settings_env
from sigflow.stack import transfer_emitter
from sigflow.stack.anvil import AnvilNode
from sinks.warehouse import connect

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


def confirmed_up_to(blocks: list[dict[str, Any]], number: int) -> bool:
    latest = fold(blocks, lambda b: b["hash"]).values()
    return all(
        b["status"] == "confirmed" for b in latest if b["status"] == "new" and b["number"] <= number
    )


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


async def test_a_reorg_of_three_blocks_retracts_the_orphans_then_publishes_the_canonical_chain(
    chain: Chain, feed_factory: Callable[[int, int], Feed]
) -> None:
    start = await chain.head() + 1
    feed = feed_factory(10, start)
    feed.run()
    orphaned_txs = [await chain.transfer(chain.usdc, 1_000_000 * (i + 1)) for i in range(3)]
    settings = feed.settings
    await wait_for(settings, "onchain.transfers", lambda ts: len(ts) >= 3)
    orphaned_blocks = await chain.canonical(start)
    replacement = {
        "from": chain.accounts[0],
        "to": chain.weth,
        "data": transfer_emitter.transfer_calldata(
            chain.accounts[3], (42 * 10**18).to_bytes(32, "big")
        ),
        "gas": "0x30000",
    }
    await chain.rpc.call("anvil_reorg", [3, [[replacement, 1]]])
    canonical = await chain.canonical(start)
    assert all(canonical[n] != orphaned_blocks[n] for n in orphaned_blocks)

    transfers = await wait_for(
        settings,
        "onchain.transfers",
        lambda ts: sum(t["removed"] for t in ts) >= 3 and len(ts) >= 7,
    )
    blocks = await wait_for(settings, "onchain.blocks", lambda bs: visible_blocks(bs) == canonical)
    await feed.stop()

    retracted = [t for t in transfers if t["removed"]]
    assert sorted(t["tx_hash"] for t in retracted) == sorted(orphaned_txs)
    assert all(t["confirmations"] == 0 for t in retracted)
    first_canonical = next(i for i, t in enumerate(transfers) if t["token_symbol"] == "WETH")
    assert all(t["removed"] for t in transfers[3:first_canonical])  # retractions first
    [weth] = transfers[first_canonical:]
    assert (weth["amount"], weth["to_address"], weth["removed"]) == (
        "42.000000000000000000",
        chain.accounts[3],
        False,
    )
    assert weth["block_hash"] == canonical[weth["block"]]
    reorged = [b for b in blocks if b["status"] == "reorged"]
    assert {b["hash"] for b in reorged} == set(orphaned_blocks.values())
    assert blocks.index(reorged[-1]) < max(i for i, b in enumerate(blocks) if b["status"] == "new")
    assert visible_transfers(transfers) == await chain.canonical_transfers(start)
    assert_no_repeats(blocks, transfers)


async def test_a_restart_across_new_blocks_and_a_reorg_leaves_no_gap_and_no_duplicate(
    chain: Chain, feed_factory: Callable[[int, int], Feed]
) -> None:
    start = await chain.head() + 1
    first = feed_factory(3, start)
    first.run()
    for i in range(4):
        await chain.transfer(chain.usdc, 10_000 + i)
    settings = first.settings
    await wait_for(settings, "onchain.transfers", lambda ts: len({t["tx_hash"] for t in ts}) >= 4)
    await first.stop()

    # while the feed is down: two more blocks, then a reorg of four (two it published)
    await chain.transfer(chain.weth, 5 * 10**17)
    await chain.transfer(chain.usdc, 77)
    await chain.rpc.call("anvil_reorg", [4, []])
    await chain.transfer(chain.usdc, 88)

    second = feed_factory(3, start)
    second.run()
    await chain.mine(3)
    canonical = await chain.canonical(start)
    blocks = await wait_for(
        settings,
        "onchain.blocks",
        lambda bs: visible_blocks(bs) == canonical and confirmed_up_to(bs, max(canonical) - 2),
    )
    expected_transfers = await chain.canonical_transfers(start)
    transfers = await wait_for(
        settings, "onchain.transfers", lambda ts: visible_transfers(ts) == expected_transfers
    )
    await second.stop()

    assert min(b["number"] for b in blocks) == start  # no gap at the start
    assert visible_blocks(blocks) == canonical  # no gap, no orphan left visible
    assert_no_repeats(blocks, transfers)
    assert sum(b["status"] == "reorged" for b in blocks) >= 1  # seen after the restart
    assert any(t["removed"] for t in transfers)  # published before, retracted after


async def test_malformed_transfer_logs_go_to_the_dlq_and_the_feed_goes_on(
    chain: Chain, feed_factory: Callable[[int, int], Feed]
) -> None:
    start = await chain.head() + 1
    feed = feed_factory(3, start)
    feed.run()
    bad_tx = await transfer_emitter.send_log(
        chain.rpc, chain.usdc, chain.accounts[0], chain.accounts[1], b"\x01\x02\x03\x04\x05"
    )
    good_tx = await chain.transfer(chain.usdc, 1)
    settings = feed.settings
    transfers = await wait_for(settings, "onchain.transfers", lambda ts: len(ts) >= 1)
    letters = await wait_for(settings, "dlq", lambda ls: len(ls) >= 1)
    await feed.stop()

    assert [t["tx_hash"] for t in transfers[:1]] == [good_tx]
    assert transfers[0]["amount"] == "0.000001"
    [letter] = letters
    assert letter["source_topic"] == f"chain:{CHAIN_ID}"
    assert letter["error_kind"] == "rpc"
    assert letter["reason"] == "Transfer log: Transfer log of USDC has 5 data bytes, not 32"
    assert json.loads(letter["raw"])["transactionHash"] == bad_tx


def test_a_node_of_another_chain_is_refused_with_one_clear_line(
    chain: Chain, anvil_node: AnvilNode, pipeline_settings: Settings, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGFLOW_")}
    env.update(settings_env(pipeline_settings))
    result = subprocess.run(
        [sys.executable, "-m", "sigflow", "ingest", "chain", "--rpc-url", anvil_node.url,
         "--chain-id", "1", "--tokens", str(chain.tokens_file)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the node at {anvil_node.url} serves chain id 31337, not 1: "
        "check --rpc-url and --chain-id"
    )


# ---- into ClickHouse through the sink role ------------------------------------------


async def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    client = await connect(settings)
    try:
        result = await client.query(sql.replace("{db}", settings.clickhouse_database))
        return [tuple(row) for row in result.result_rows]
    finally:
        await client.close()


async def eventually(settings: Settings, sql: str, expected: Any, timeout: float = 60) -> None:
    rows: Any = None
    try:
        async with asyncio.timeout(timeout):
            while (rows := await query(settings, sql)) != expected:
                await asyncio.sleep(0.3)
    except TimeoutError:
        pytest.fail(f"{sql}\nreturned {rows}, expected {expected}")


async def test_chain_events_land_once_in_clickhouse_and_a_retraction_hides_the_orphan(
    chain: Chain, feed_factory: Callable[[int, int], Feed], roles: Roles
) -> None:
    start = await chain.head() + 1
    feed = feed_factory(10, start)
    settings = feed.settings
    await migrate(settings)  # the sink applies them too; here so queries work at once
    roles.start("sink")
    feed.run()
    orphan_tx = await chain.transfer(chain.usdc, 2_500_000)
    kept_tx = await chain.transfer(chain.usdc, 1)
    await chain.mine(1)
    visible = (
        "SELECT tx_hash, toString(amount) FROM {db}.onchain_transfers_canonical ORDER BY block"
    )
    await eventually(settings, visible, [(orphan_tx, "2.5"), (kept_tx, "0.000001")])

    # orphan the first transfer's block and the two after it; the second comes back
    await chain.rpc.call("anvil_reorg", [3, []])
    await chain.mine(2)
    canonical = await chain.canonical(start)
    await eventually(settings, visible, [])
    blocks_sql = "SELECT number, hash FROM {db}.onchain_blocks_canonical ORDER BY number"
    await eventually(settings, blocks_sql, sorted(canonical.items()))
    await feed.stop()

    rows = await query(
        settings,
        "SELECT count(), uniqExact(block_hash, log_index) FROM {db}.onchain_transfers FINAL",
    )
    assert rows == [(2, 2)]  # one row per transfer, the retraction in place of the original
    removed = await query(
        settings, "SELECT tx_hash FROM {db}.onchain_transfers FINAL WHERE removed ORDER BY block"
    )
    assert removed == [(orphan_tx,), (kept_tx,)]
    rows = await query(settings, "SELECT count(), uniqExact(hash) FROM {db}.onchain_blocks FINAL")
    assert rows[0][0] == rows[0][1]  # one row per block hash
    assert roles.dead() == [], roles.logs()
