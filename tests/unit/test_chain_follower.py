"""The block follower against a simulated chain: mining, reorgs and restarts.

The simulation is the reference: after every poll, folding everything the follower
published (latest record per block hash and per transfer) must give exactly the node's
canonical chain from the start block to the head, with correct finality, and no record
may repeat the previous one of the same block or transfer.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.chain.blocks import BlockHeader
from ingest.chain.exceptions import ReorgTooDeepError
from ingest.chain.follower import BlockFollower, FetchedBlock, Step, linked_prefix
from ingest.chain.transfers import TransferLog

CHAIN_ID = 31337
TOKEN = "0x" + "aa" * 20
ALICE, BOB = "0x" + "01" * 20, "0x" + "02" * 20


class Node:
    """A chain of blocks with unique hashes; reorgs replace its last blocks."""

    def __init__(self, length: int) -> None:
        self._ids = itertools.count(1)
        self.blocks: list[FetchedBlock] = []
        self.mine(length, [0] * length)

    @property
    def head(self) -> int:
        return len(self.blocks) - 1

    def mine(self, count: int, transfers: list[int]) -> None:
        for i in range(count):
            number = len(self.blocks)
            block_hash = f"0x{next(self._ids):064x}"
            parent = self.blocks[-1].header.hash if self.blocks else "0x" + "00" * 32
            logs = tuple(
                TransferLog(
                    block=number,
                    block_hash=block_hash,
                    tx_hash=f"0x{next(self._ids):064x}",
                    log_index=index,
                    token=TOKEN,
                    token_symbol="TKN",
                    from_address=ALICE,
                    to_address=BOB,
                    amount=Decimal(next(self._ids)).scaleb(-6),
                )
                for index in range(transfers[i] if i < len(transfers) else 0)
            )
            header = BlockHeader(number, block_hash, parent, 1_000 * number, 7, 21_000, len(logs))
            self.blocks.append(FetchedBlock(header, logs))

    def reorg(self, depth: int, replacement: int, transfers: list[int]) -> None:
        del self.blocks[len(self.blocks) - depth :]
        self.mine(replacement, transfers)

    def fetch(self, numbers: range) -> list[FetchedBlock]:
        return [self.blocks[n] for n in numbers if n < len(self.blocks)]


class Published:
    """The two output topics of one chain, in publication order."""

    def __init__(self) -> None:
        self.blocks: list[Any] = []
        self.transfers: list[Any] = []
        self.last_step: Step | None = None

    def add(self, step: Step) -> None:
        self.transfers += step.transfers  # the ingestor flushes transfers before blocks
        self.blocks += step.blocks
        self.last_step = step

    def crash_during_last_step(self, kept: int) -> None:
        """Lose the end of the last step, as a crash between sends would."""
        step = self.last_step
        if step is None:
            return
        lost_blocks = len(step.blocks) - max(0, kept - len(step.transfers))
        lost_transfers = max(0, len(step.transfers) - kept)
        del self.blocks[len(self.blocks) - lost_blocks :]
        del self.transfers[len(self.transfers) - lost_transfers :]


def follow(follower: BlockFollower, node: Node, published: Published) -> None:
    for _ in range(100):
        step = follower.apply(node.head, node.fetch(follower.wants(node.head)))
        published.add(step)
        if not step.needs_more:
            return
    pytest.fail("the follower did not catch up within 100 steps")


def latest(records: list[Any], key: Any) -> dict[Any, Any]:
    return {key(record): record for record in records}


def check_truth(published: Published, node: Node, start: int, depth: int) -> None:
    blocks = latest(published.blocks, lambda b: b.hash)
    transfers = latest(published.transfers, lambda t: (t.block_hash, t.log_index))
    canonical = [b for b in node.blocks if b.header.number >= start]
    # Above a head that went down, published blocks wait until the node shows another
    # block at their height (a lagging node looks the same as a shorter fork).
    visible = {
        h: b.number for h, b in blocks.items() if b.status != "reorged" and b.number <= node.head
    }
    assert visible == {b.header.hash: b.header.number for b in canonical}
    visible_transfers = {
        k: t.amount for k, t in transfers.items() if not t.removed and t.block <= node.head
    }
    assert visible_transfers == {
        (t.block_hash, t.log_index): t.amount for b in canonical for t in b.transfers
    }
    for fetched in canonical:
        record = blocks[fetched.header.hash]
        if node.head - fetched.header.number + 1 >= depth:
            assert record.status == "confirmed"
        for log in fetched.transfers:
            assert transfers[(log.block_hash, log.log_index)].confirmations == record.confirmations
    for record in published.blocks:
        if record.status == "confirmed":
            assert record.confirmations >= depth
        elif record.status == "new":
            assert 1 <= record.confirmations < depth
        else:
            assert record.confirmations == 0


def check_no_repeats(published: Published) -> None:
    def stages(records: list[Any], key: Any, stage: Any) -> None:
        previous: dict[Any, Any] = {}
        for record in records:
            assert previous.get(key(record)) != stage(record), f"repeated {record}"
            previous[key(record)] = stage(record)

    stages(published.blocks, lambda b: b.hash, lambda b: b.status)
    stages(
        published.transfers,
        lambda t: (t.block_hash, t.log_index),
        lambda t: (t.removed, t.removed or t.confirmations),
    )


def new_follower(depth: int, start: int, window: int = 24, batch: int = 5) -> BlockFollower:
    return BlockFollower(CHAIN_ID, confirmations=depth, window=window, batch=batch, start=start)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("mine"), st.integers(1, 7), st.lists(st.integers(0, 3), max_size=7)),
        st.tuples(
            st.just("reorg"),
            st.integers(1, 6),
            st.integers(0, 8),
            st.lists(st.integers(0, 3), max_size=8),
        ),
        st.tuples(st.just("restart"), st.integers(0, 12)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(ops=operations, depth=st.integers(1, 6), start=st.integers(0, 4))
def test_published_records_always_fold_into_the_canonical_chain(
    ops: list[tuple[Any, ...]], depth: int, start: int
) -> None:
    node = Node(length=6)
    published = Published()
    follower = new_follower(depth, start)
    follow(follower, node, published)
    for op in ops:
        if op[0] == "mine":
            node.mine(op[1], op[2])
        elif op[0] == "reorg":
            node.reorg(min(op[1], node.head), op[2], op[3])
        else:
            published.crash_during_last_step(op[1])
            follower = new_follower(depth, start)
            follower.resume(published.blocks, published.transfers)
        follow(follower, node, published)
        check_truth(published, node, start, depth)
        check_no_repeats(published)


def test_a_reorg_retracts_orphans_before_publishing_the_canonical_blocks() -> None:
    node = Node(length=4)
    published = Published()
    follower = new_follower(depth=10, start=0, batch=10)
    node.mine(3, [1, 2, 1])
    follow(follower, node, published)
    orphans = [b.header for b in node.blocks[-3:]]
    orphan_transfers = [t for b in node.blocks[-3:] for t in b.transfers]
    node.reorg(3, 4, [0, 1, 0, 0])
    step = follower.apply(node.head, node.fetch(follower.wants(node.head)))
    if step.needs_more:  # the ancestor is two blocks below the overlap: walk back
        step = follower.apply(node.head, node.fetch(follower.wants(node.head)))
    assert step.reorg_depth == 3
    assert [(b.hash, b.status) for b in step.blocks[:3]] == [(h.hash, "reorged") for h in orphans]
    assert [(b.number, b.status) for b in step.blocks[3:]] == [(n, "new") for n in range(4, 8)]
    removed = step.transfers[: len(orphan_transfers)]
    assert [(t.tx_hash, t.removed, t.confirmations) for t in removed] == [
        (t.tx_hash, True, 0) for t in orphan_transfers
    ]
    [canonical] = step.transfers[len(orphan_transfers) :]
    assert canonical.removed is False and canonical.block == 5


def test_a_same_height_reorg_is_seen_through_the_one_block_overlap() -> None:
    node = Node(length=5)
    published = Published()
    follower = new_follower(depth=3, start=0)
    follow(follower, node, published)
    assert follower.wants(node.head) == range(4, 5)
    node.reorg(1, 1, [1])
    follow(follower, node, published)
    check_truth(published, node, 0, 3)


def test_blocks_already_deep_enough_are_published_confirmed_once() -> None:
    node = Node(length=20)
    published = Published()
    follow(new_follower(depth=5, start=0), node, published)
    statuses = [(b.number, b.status) for b in published.blocks]
    assert statuses[:16] == [(n, "confirmed") for n in range(16)]
    assert statuses[16:] == [(n, "new") for n in range(16, 20)]
    assert published.blocks[0].confirmations == 20


def test_a_reorg_below_the_window_is_an_error_not_a_silent_gap() -> None:
    node = Node(length=40)
    follower = new_follower(depth=2, start=0, window=8, batch=50)
    follow(follower, node, Published())
    node.reorg(12, 12, [])
    with pytest.raises(ReorgTooDeepError, match="SIGFLOW_CHAIN_REORG_WINDOW"):
        follow(follower, node, Published())


def test_a_batch_mixing_two_branches_is_cut_at_the_break() -> None:
    node = Node(length=5)
    before = list(node.blocks)
    node.reorg(2, 2, [1, 1])
    mixed = [*before[:4], *node.blocks[4:]]  # 4' names 3', not 3, as its parent
    assert [b.header.number for b in linked_prefix(mixed)] == [0, 1, 2, 3]
    assert [b.header.number for b in linked_prefix([*before[:2], before[3]])] == [0, 1]


def test_default_start_is_the_head_minus_the_confirmation_depth() -> None:
    follower = BlockFollower(CHAIN_ID, confirmations=12, window=64, batch=100)
    assert follower.wants(1_000) == range(988, 1_001)
