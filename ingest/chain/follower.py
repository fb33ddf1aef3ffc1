"""The block follower: a pure state machine deciding what the chain feed publishes.

It keeps two things: the canonical chain as it last saw it (a bounded window of recent
blocks with their Transfer logs), and what has been *published* for each block hash and
each transfer (its latest status). Every step reconciles the two and returns the
difference as events:

- a canonical block (and its transfers) not published yet → `new`, or `confirmed` when
  it already has `confirmations` blocks on top of it (catch-up);
- a published `new` block that reached the depth → `confirmed` (transfers again, with
  their confirmations);
- a published block or transfer that is no longer canonical → `reorged` /
  `removed=true`, before the canonical replacements.

The published state is rebuilt after a restart from the output topics themselves
(`resume`), so the first step after a restart emits exactly what is missing: no gap, and
nothing published twice, even if the process died half-way through a step or the chain
reorganized while it was down.

Fetching is the caller's job: `wants(head)` says which block numbers to fetch (always
overlapping the tip by one block, so a same-height reorg is seen), `apply(head, blocks)`
takes them. On a parent-hash mismatch whose common ancestor is not in the fetched range
the follower asks for deeper ranges (doubling) until it finds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ingest.chain.blocks import BlockHeader
from ingest.chain.exceptions import ReorgTooDeepError
from ingest.chain.transfers import TransferLog
from schemas.codec import codec_for
from schemas.events import OnchainBlock, OnchainTransfer

BLOCK_CODEC = codec_for(OnchainBlock)
TRANSFER_CODEC = codec_for(OnchainTransfer)
Stage = Literal["new", "confirmed", "reorged"]  # a transfer's `reorged` is `removed=true`
TransferKey = tuple[str, int]  # (block hash, log index)


@dataclass(frozen=True, slots=True)
class FetchedBlock:
    """A block header and the listed tokens' Transfer logs in it."""

    header: BlockHeader
    transfers: tuple[TransferLog, ...] = ()


@dataclass(frozen=True)
class Step:
    """What one `apply` decided: events to publish, in order, and what happened."""

    blocks: list[Any] = field(default_factory=list)  # OnchainBlock structs
    transfers: list[Any] = field(default_factory=list)  # OnchainTransfer structs
    reorg_depth: int = 0  # blocks orphaned at the tip, 0 when none
    needs_more: bool = False  # more to fetch right away (catching up, or walking back)


def block_event(header: BlockHeader, chain_id: int, status: Stage, confirmations: int) -> Any:
    """The `onchain.blocks` record of a header."""
    return BLOCK_CODEC.struct(
        chain_id=chain_id,
        number=header.number,
        hash=header.hash,
        parent_hash=header.parent_hash,
        timestamp=header.timestamp,
        base_fee=header.base_fee,
        gas_used=header.gas_used,
        tx_count=header.tx_count,
        status=status,
        confirmations=confirmations,
    )


def transfer_event(
    log: TransferLog, chain_id: int, timestamp: int, confirmations: int, *, removed: bool
) -> Any:
    """The `onchain.transfers` record of a decoded log."""
    return TRANSFER_CODEC.struct(
        chain_id=chain_id,
        block=log.block,
        block_hash=log.block_hash,
        timestamp=timestamp,
        tx_hash=log.tx_hash,
        log_index=log.log_index,
        token=log.token,
        token_symbol=log.token_symbol,
        from_address=log.from_address,
        to_address=log.to_address,
        amount=log.amount,
        usd_value=None,
        confirmations=confirmations,
        removed=removed,
    )


def header_of(event: Any) -> BlockHeader:
    """The header inside an `onchain.blocks` record."""
    return BlockHeader(
        number=event.number,
        hash=event.hash,
        parent_hash=event.parent_hash,
        timestamp=event.timestamp,
        base_fee=event.base_fee,
        gas_used=event.gas_used,
        tx_count=event.tx_count,
    )


def log_of(event: Any) -> TransferLog:
    """The decoded log inside an `onchain.transfers` record."""
    return TransferLog(
        block=event.block,
        block_hash=event.block_hash,
        tx_hash=event.tx_hash,
        log_index=event.log_index,
        token=event.token,
        token_symbol=event.token_symbol,
        from_address=event.from_address,
        to_address=event.to_address,
        amount=event.amount,
    )


def linked_prefix(blocks: Sequence[FetchedBlock]) -> list[FetchedBlock]:
    """The longest prefix of consecutive blocks each naming the previous one as parent.

    A batch fetched while the chain reorganized can mix two branches; the rest is
    fetched again on the next poll.
    """
    kept: list[FetchedBlock] = []
    for block in blocks:
        if kept:
            previous = kept[-1].header
            if (
                block.header.number != previous.number + 1
                or block.header.parent_hash != previous.hash
            ):
                break
        kept.append(block)
    return kept


class BlockFollower:
    """Canonical window + published state of one chain; no I/O (see the module doc)."""

    def __init__(
        self,
        chain_id: int,
        *,
        confirmations: int,
        window: int,
        batch: int,
        start: int | None = None,
    ) -> None:
        if window < confirmations + 1:
            raise ValueError("the window must hold more blocks than the confirmation depth")
        self.chain_id = chain_id
        self.confirmations = confirmations
        self.window = window
        self.batch = batch
        self.start = start  # first block to fetch when nothing was published yet
        self._chain: list[FetchedBlock] = []  # canonical, consecutive numbers
        self._blocks: dict[str, tuple[Stage, Any]] = {}  # published, by hash
        self._transfers: dict[TransferKey, tuple[Stage, Any]] = {}  # published
        self._probe = 0  # > 0 while walking back to a common ancestor
        self._orphans: set[str] = set()  # hashes cut from the chain, to retract
        self._whole = True  # the window still holds the first block ever published

    # -- state ---------------------------------------------------------------------------

    @property
    def tip(self) -> BlockHeader | None:
        """The newest canonical block seen (the remembered head)."""
        return self._chain[-1].header if self._chain else None

    def resume(self, blocks: Iterable[Any], transfers: Iterable[Any]) -> None:
        """Rebuild from records already on the topics (in topic order, this chain only)."""
        for event in blocks:
            self._blocks[event.hash] = (event.status, event)
        for event in transfers:
            stage: Stage = (
                "reorged"
                if event.removed
                else "confirmed"
                if event.confirmations >= self.confirmations
                else "new"
            )
            self._transfers[(event.block_hash, event.log_index)] = (stage, event)
        live = {h: e for h, (status, e) in self._blocks.items() if status != "reorged"}
        if not live:
            return
        by_block: dict[str, list[TransferLog]] = {}
        for (block_hash, _), (stage, event) in self._transfers.items():
            if stage != "reorged":
                by_block.setdefault(block_hash, []).append(log_of(event))
        # The tip is the highest live block whose ancestry is live too: a live block on
        # top of a retracted one lost its `reorged` record in a crash and is an orphan.
        chain: list[FetchedBlock] = []
        for candidate in sorted(live.values(), key=lambda e: -e.number):
            if candidate.hash in self._orphans:
                continue
            chain = []
            event = candidate
            while event is not None and len(chain) < self.window:
                logs = sorted(by_block.get(event.hash, []), key=lambda log: log.log_index)
                chain.append(FetchedBlock(header_of(event), tuple(logs)))
                event = live.get(event.parent_hash)
            parent = self._blocks.get(chain[-1].header.parent_hash)
            if len(chain) == self.window or parent is None:
                break
            self._orphans.update(b.header.hash for b in chain)
            chain = []
        if not chain:
            return
        self._chain = chain[::-1]
        self._whole = len(chain) < self.window  # the checkpoint reads at least a window

    # -- fetching ------------------------------------------------------------------------

    def wants(self, head: int) -> range:
        """Block numbers to fetch next (empty when there is nothing to do yet)."""
        if not self._chain:
            start = self.start if self.start is not None else max(0, head - self.confirmations)
            return range(start, min(head, start + self.batch - 1) + 1)
        first = self._chain[0].header.number
        tip = self._chain[-1].header.number
        lo = max(first, min(tip, head) - self._probe)
        hi = min(head, max(lo + self.batch - 1, tip))
        return range(lo, hi + 1)

    # -- stepping ------------------------------------------------------------------------

    def apply(self, head: int, fetched: Sequence[FetchedBlock]) -> Step:
        """Take freshly fetched blocks and the node's head; return what to publish."""
        blocks = linked_prefix(fetched)
        reorg_depth = 0
        if not blocks and not self._chain:
            return Step()
        if blocks and not self._chain:
            self._chain = list(blocks)
        elif blocks:
            found = self._adopt(blocks)
            if found is None:
                return Step(needs_more=True)
            reorg_depth = found
        events = self._reconcile(max(head, self.tip.number if self.tip else 0))
        self._prune()
        tip = self.tip
        behind = tip is None or tip.number < head or len(blocks) < len(fetched)
        return Step(*events, reorg_depth=reorg_depth, needs_more=bool(self._chain) and behind)

    def _adopt(self, blocks: list[FetchedBlock]) -> int | None:
        """Join `blocks` to the chain at their common ancestor; the orphaned depth, or
        None when the ancestor lies below the fetched range (fetch deeper)."""
        first = self._chain[0].header.number
        tip = self._chain[-1].header.number
        lo, hi = blocks[0].header.number, blocks[-1].header.number
        canonical = {b.header.number: b.header.hash for b in blocks}
        canonical[lo - 1] = blocks[0].header.parent_hash
        ancestor = next(
            (
                number
                for number in range(min(hi, tip), max(lo - 1, first) - 1, -1)
                if self._chain[number - first].header.hash == canonical.get(number)
            ),
            None,
        )
        if ancestor is None and lo > first:
            self._probe = min(max(2 * self._probe, 4), self.window)
            return None
        self._probe = 0
        if ancestor is None:
            if not self._whole:
                raise ReorgTooDeepError(lo, first)
            # Everything this feed ever published is in the window: start over at `first`.
            cut, self._chain = self._chain, [b for b in blocks if b.header.number >= first]
            self._orphans.update(b.header.hash for b in cut)
            return len(cut)
        cut = self._chain[ancestor - first + 1 :]
        if cut and ancestor < hi:
            self._orphans.update(b.header.hash for b in cut)
            self._chain = self._chain[: ancestor - first + 1]
        else:
            cut = []  # the node is behind our tip but agrees so far: wait for it
        self._chain.extend(b for b in blocks if b.header.number > self._chain[-1].header.number)
        return len(cut)

    def _reconcile(self, head: int) -> tuple[list[Any], list[Any]]:
        """Events that turn the published state into the canonical one."""
        blocks: list[Any] = []
        transfers: list[Any] = []
        self._retract_orphans(blocks, transfers)
        for fetched in self._chain:
            header = fetched.header
            confirmations = head - header.number + 1
            wanted: Stage = "confirmed" if confirmations >= self.confirmations else "new"
            published = self._blocks.get(header.hash)
            if published is not None and published[0] == "confirmed":
                wanted = "confirmed"  # never back to new (the node's head may lag)
            if published is None or published[0] != wanted:
                event = block_event(header, self.chain_id, wanted, confirmations)
                self._blocks[header.hash] = (wanted, event)
                blocks.append(event)
            for log in fetched.transfers:
                key = (log.block_hash, log.log_index)
                known = self._transfers.get(key)
                if known is None or known[0] != wanted:
                    event = transfer_event(
                        log, self.chain_id, header.timestamp, confirmations, removed=False
                    )
                    self._transfers[key] = (wanted, event)
                    transfers.append(event)
        return blocks, transfers

    def _retract_orphans(self, blocks: list[Any], transfers: list[Any]) -> None:
        """`reorged` / `removed` for published entities no longer on the canonical chain."""
        first = self._chain[0].header.number
        tip = self._chain[-1].header.number
        canonical = {b.header.hash for b in self._chain}

        def orphaned(number: int, block_hash: str) -> bool:
            if block_hash in canonical:
                return False
            return block_hash in self._orphans or first <= number <= tip

        for block_hash, (stage, event) in sorted(
            self._blocks.items(), key=lambda item: item[1][1].number
        ):
            if stage != "reorged" and orphaned(event.number, block_hash):
                retracted = BLOCK_CODEC.struct(
                    **{**_fields(event), "status": "reorged", "confirmations": 0}
                )
                self._blocks[block_hash] = ("reorged", retracted)
                blocks.append(retracted)
        for key, (stage, event) in sorted(
            self._transfers.items(), key=lambda item: (item[1][1].block, item[0][1])
        ):
            if stage != "reorged" and orphaned(event.block, key[0]):
                retracted = TRANSFER_CODEC.struct(
                    **{**_fields(event), "removed": True, "confirmations": 0}
                )
                self._transfers[key] = ("reorged", retracted)
                transfers.append(retracted)
        self._orphans.clear()

    def _prune(self) -> None:
        """Forget blocks below the window: they are final as far as this feed goes."""
        if len(self._chain) > self.window:
            del self._chain[: len(self._chain) - self.window]
            self._whole = False
        first = self._chain[0].header.number if self._chain else 0
        self._blocks = {h: v for h, v in self._blocks.items() if v[1].number >= first}
        self._transfers = {k: v for k, v in self._transfers.items() if v[1].block >= first}


def _fields(event: Any) -> dict[str, Any]:
    return {name: getattr(event, name) for name in event.__struct_fields__}
