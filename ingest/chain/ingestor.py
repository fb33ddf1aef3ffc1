"""The chain feed: poll an EVM node, let the follower decide, publish to Kafka.

One loop per chain: read the head (`eth_blockNumber`), fetch the blocks the follower
wants in one batch request plus the listed tokens' Transfer logs for the same range
(`eth_getLogs`), apply them, publish the step. Far behind the head, steps follow each
other without waiting (catch-up in batches of `chain_batch_blocks`); caught up, the
loop sleeps `chain_poll_seconds`.

Each step publishes its transfers first and waits for their acknowledgement, then its
block records: a block record on the topic therefore implies its transfers are there
too, and the checkpoint (`ingest.chain.checkpoint`) sees any half-published step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson

from ingest import metrics
from ingest.chain.blocks import BlockHeader, parse_block
from ingest.chain.checkpoint import chain_key, read_published
from ingest.chain.exceptions import (
    ChainIdMismatchError,
    MalformedRpcDataError,
    RpcError,
    RpcTransportError,
)
from ingest.chain.follower import (
    BLOCK_CODEC,
    TRANSFER_CODEC,
    BlockFollower,
    FetchedBlock,
    Step,
)
from ingest.chain.rpc import JsonRpcClient
from ingest.chain.tokens import TokenList
from ingest.chain.transfers import TransferLog, decode_transfer
from ingest.producer import EventProducer
from sigflow.settings import Settings

log = logging.getLogger(__name__)

RETRY_MAX_SECONDS = 60.0
DEAD_LETTERED_MEMORY = 10_000  # digests of raw inputs already sent to the DLQ


class ChainIngestor:
    """Follows one chain until `stop()`; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        rpc_url: str,
        chain_id: int,
        tokens: TokenList,
        from_block: int | None = None,
    ) -> None:
        self.settings = settings
        self.rpc_url = rpc_url
        self.chain_id = chain_id
        self.tokens = tokens
        self.from_block = from_block
        self.source = f"chain:{chain_id}"
        self.key = chain_key(chain_id)
        self._stopping = asyncio.Event()
        self._dead_lettered: dict[bytes, None] = {}

    def stop(self) -> None:
        """Finish the current step, flush, and return from `run()`."""
        self._stopping.set()

    async def run(self) -> None:
        """Verify the chain, resume from the topics, then follow the head."""
        settings = self.settings
        rpc = JsonRpcClient(
            self.rpc_url,
            timeout=settings.chain_rpc_timeout_seconds,
            retries=settings.chain_rpc_retries,
        )
        async with rpc, EventProducer(settings, component="ingest.chain") as producer:
            actual = await rpc.chain_id()
            if actual != self.chain_id:
                raise ChainIdMismatchError(self.chain_id, actual, rpc.name)
            follower = BlockFollower(
                self.chain_id,
                confirmations=settings.chain_confirmations,
                window=settings.chain_reorg_window,
                batch=settings.chain_batch_blocks,
                start=self.from_block,
            )
            published = await read_published(settings, self.chain_id, settings.chain_reorg_window)
            follower.resume(published.blocks, published.transfers)
            tip = follower.tip
            log.info(
                "chain feed started",
                extra={
                    "source": self.source,
                    "node": rpc.name,
                    "tokens": len(self.tokens),
                    "resume_after": tip.number if tip else None,
                    "from_block": self.from_block if tip is None else None,
                },
            )
            await self._follow(rpc, producer, follower)
            await producer.flush()

    async def _follow(
        self, rpc: JsonRpcClient, producer: EventProducer, follower: BlockFollower
    ) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                step, head = await self._step(rpc, producer, follower)
            except (RpcTransportError, RpcError, MalformedRpcDataError) as exc:
                failures += 1
                metrics.RECONNECTS.labels(self.source).inc()
                delay = min(self.settings.chain_poll_seconds * 2**failures, RETRY_MAX_SECONDS)
                log.warning(
                    "chain poll failed, retrying",
                    extra={"source": self.source, "error": str(exc), "delay_seconds": delay},
                )
                await self._sleep(delay)
                continue
            failures = 0
            await self._publish(producer, step)
            tip = follower.tip
            if tip is not None:
                metrics.BLOCKS_BEHIND.labels(self.source).set(max(0, head - tip.number))
            if not step.needs_more:
                await self._sleep(self.settings.chain_poll_seconds)

    async def _step(
        self, rpc: JsonRpcClient, producer: EventProducer, follower: BlockFollower
    ) -> tuple[Step, int]:
        head = await rpc.block_number()
        numbers = follower.wants(head)
        fetched = await self._fetch(rpc, producer, numbers) if numbers else []
        return follower.apply(head, fetched), head

    async def _fetch(
        self, rpc: JsonRpcClient, producer: EventProducer, numbers: range
    ) -> list[FetchedBlock]:
        """Blocks of `numbers` with their transfers; stops before a block that does not
        parse (dead-lettered) or whose logs came from another branch (re-fetched)."""
        raw_blocks = await rpc.blocks(numbers)
        raw_logs = await rpc.transfer_logs(numbers, self.tokens.addresses)
        metrics.MESSAGES_RECEIVED.labels(self.source).inc(len(raw_blocks) + len(raw_logs))
        headers: list[BlockHeader] = []
        for raw in raw_blocks:
            if raw is None:  # not there yet (a node behind its own eth_blockNumber)
                break
            try:
                headers.append(parse_block(raw))
            except MalformedRpcDataError as exc:
                await self._reject(producer, raw, f"block: {exc.reason}")
                break
        logs = await self._decode_logs(producer, raw_logs)
        fetched = []
        for header in headers:
            transfers = logs.get(header.number, [])
            if any(t.block_hash != header.hash for t in transfers):
                break  # the chain moved between the two calls
            fetched.append(FetchedBlock(header, tuple(sorted(transfers, key=_log_index))))
        return fetched

    async def _decode_logs(
        self, producer: EventProducer, raw_logs: Sequence[Any]
    ) -> dict[int, list[TransferLog]]:
        by_block: dict[int, list[TransferLog]] = {}
        for raw in raw_logs:
            try:
                transfer = decode_transfer(raw, self.tokens)
            except MalformedRpcDataError as exc:
                await self._reject(producer, raw, f"Transfer log: {exc.reason}")
                continue
            by_block.setdefault(transfer.block, []).append(transfer)
        return by_block

    async def _reject(self, producer: EventProducer, raw: Any, reason: str) -> None:
        """Dead-letter a raw RPC object once (a re-fetch of the same block does not repeat)."""
        body = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.blake2b(body, digest_size=16).digest()
        if digest in self._dead_lettered:
            return
        self._dead_lettered[digest] = None
        if len(self._dead_lettered) > DEAD_LETTERED_MEMORY:
            del self._dead_lettered[next(iter(self._dead_lettered))]
        log.warning(
            "malformed RPC data dead-lettered", extra={"source": self.source, "reason": reason}
        )
        await producer.reject(self.source, body, reason, kind="rpc")

    async def _publish(self, producer: EventProducer, step: Step) -> None:
        """Transfers first, acknowledged; then the block records (see the module doc)."""
        transfers_topic = self.settings.topic("onchain.transfers")
        blocks_topic = self.settings.topic("onchain.blocks")
        for event in step.transfers:
            value = TRANSFER_CODEC.encode(event)
            await producer.send(transfers_topic, self.key, value, self.source)
        if step.transfers:
            await producer.flush()
        now_ms = time.time() * 1000
        lag = metrics.EVENT_LAG.labels(self.source)
        for event in step.blocks:
            await producer.send(blocks_topic, self.key, BLOCK_CODEC.encode(event), self.source)
            if event.status == "new":
                lag.observe(max(0.0, now_ms - event.timestamp) / 1000)
        if step.reorg_depth:
            metrics.REORGS.labels(self.source).inc()
            metrics.REORGED_BLOCKS.labels(self.source).inc(step.reorg_depth)
            log.warning(
                "chain reorganization",
                extra={
                    "source": self.source,
                    "depth": step.reorg_depth,
                    "retracted_transfers": sum(t.removed for t in step.transfers),
                },
            )

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _log_index(transfer: TransferLog) -> int:
    return transfer.log_index
