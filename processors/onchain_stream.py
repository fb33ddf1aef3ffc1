"""On-chain anomalies: gas spikes, reorgs and whale transfers priced from sigflow's own
market stream. The thin layer between Kafka records and the pure detectors.

Two streams:

- `PriceFeed` (candles -> prices): every closed candle of the pricing interval whose
  market prices a mapped asset (`pricing.py`) becomes a small `PricePoint` record,
  *broadcast* to every partition of the internal topic `<app id>-asset-prices`. The
  trades agent runs it on the candles it just built (reading them back from the
  `candles` topic cost the worker one Faust consume per candle).
- `OnchainStream` (onchain.blocks + onchain.transfers + asset prices): the on-chain
  topics are keyed by chain id, prices by asset, and a chain's transfers need every
  asset's prices; broadcasting the (low-rate) prices to every partition makes each
  partition carry all prices next to its chains, so the three topics are co-partitioned
  (same partition count, consumed by one agent: Faust assigns the same partition
  numbers of each to one worker) and the join needs no shared state.

State is per partition (one table key placed on that partition, see `placement.py`):
the last offset read from each topic, the partition's `PriceBook` and, per chain, the
gas baseline, the open reorg run and the whale watch (pending and seen transfers).
Records are folded in offset order per topic; a chain's anomalies depend only on its
own records and on prices at or before their event time (see `pricing.py` for the
bounded-lateness bargain that makes the join deterministic), never on the wall clock.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from processors.anomalies.findings import Finding, anomaly_record
from processors.anomalies.gas_spike import BlockView, GasSpikeDetector
from processors.anomalies.reorg import ReorgTracker
from processors.anomalies.rules import AnomalyRules
from processors.anomalies.whale import WhaleWatch
from processors.candle_stream import RawRecord, StateLoader
from processors.placement import partition_key
from processors.pricing import PriceBook, TokenPrices
from schemas.codec import codec_for
from schemas.dead_letters import reject_record
from schemas.events import OnchainBlock, OnchainTransfer
from schemas.exceptions import SchemaError

BLOCK_CODEC = codec_for(OnchainBlock)
TRANSFER_CODEC = codec_for(OnchainTransfer)
COMPONENT = "processor"
STATE_NAME = "__onchain__"
Source = Literal["block", "transfer", "price"]


class PricePoint(msgspec.Struct, frozen=True, kw_only=True):
    """One close on the internal prices topic (key: the asset)."""

    exchange: str
    symbol: str
    time: int  # the candle's close time, epoch ms
    price: float


POINT_ENCODER = msgspec.json.Encoder()
POINT_DECODER = msgspec.json.Decoder(PricePoint)


class PriceFeed:
    """Closed candles -> price points of the markets that price a mapped asset."""

    def __init__(self, prices: TokenPrices) -> None:
        self.prices = prices

    def points(self, candles: Iterable[Any]) -> list[tuple[bytes, bytes]]:
        """The price points (key: asset) of `candles`, the `Candle` structs the processor
        just built. Stateless: a re-sent point is harmless (the book keeps one close per
        time)."""
        points = []
        for candle in candles:
            if candle.interval != self.prices.pricing.interval or not candle.final:
                continue
            ranked = self.prices.market_rank(candle.symbol)
            if ranked is None:
                continue
            point = PricePoint(
                exchange=candle.exchange,
                symbol=candle.symbol,
                time=candle.close_time,
                price=candle.close,
            )
            points.append((ranked[0].encode(), POINT_ENCODER.encode(point)))
        return points


@dataclass
class OnchainResult:
    """What one micro-batch of on-chain records and prices produced."""

    anomalies: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes, bytes]] = field(default_factory=list)
    states: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    anomaly_kinds: Counter[str] = field(default_factory=Counter)
    pricing: Counter[str] = field(default_factory=Counter)  # whale pricing outcomes
    events: int = 0
    skipped: int = 0

    def add(self, findings: Iterable[Finding]) -> None:
        for finding in findings:
            self.anomalies.append(anomaly_record(finding))
            self.anomaly_kinds[finding.kind] += 1


@dataclass
class ChainState:
    """Detectors of one chain and its newest event time."""

    gas: GasSpikeDetector
    reorg: ReorgTracker
    whale: WhaleWatch
    time: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "gas": self.gas.to_dict(),
            "reorg": self.reorg.to_dict(),
            "whale": self.whale.to_dict(),
            "time": self.time,
        }


class OnchainStream:
    """Chain detectors and the price join, per partition; `sources` maps topic -> kind."""

    def __init__(
        self,
        rules: AnomalyRules,
        prices: TokenPrices,
        sources: dict[str, Source],
        partitions: int | None = None,
    ) -> None:
        self.rules, self.prices, self.sources, self.partitions = rules, prices, sources, partitions

    def process(self, records: Iterable[RawRecord], load_state: StateLoader) -> OnchainResult:
        """Fold a batch in, partition by partition; outputs and new state per partition."""
        result = OnchainResult()
        by_partition: dict[int, list[RawRecord]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        for partition, items in by_partition.items():
            key = partition_key(STATE_NAME, partition, self.partitions)
            self._process_partition(key, items, load_state(key), result)
        return result

    def _process_partition(
        self,
        key: bytes,
        records: list[RawRecord],
        saved: dict[str, Any] | None,
        result: OnchainResult,
    ) -> None:
        saved = saved or {}
        offsets: dict[str, int] = dict(saved.get("offsets", {}))
        book = PriceBook(self.prices, saved.get("book"))
        stored_chains: dict[str, Any] = saved.get("chains", {})
        chains: dict[int, ChainState] = {}

        def chain(chain_id: int) -> ChainState:
            state = chains.get(chain_id)
            if state is None:
                stored = stored_chains.get(str(chain_id), {})
                state = chains[chain_id] = ChainState(
                    gas=GasSpikeDetector(self.rules.gas_spike, stored.get("gas")),
                    reorg=ReorgTracker(self.rules.reorg, stored.get("reorg")),
                    whale=WhaleWatch(
                        self.rules.whale_transfer, self.prices, chain_id, stored.get("whale")
                    ),
                    time=stored.get("time", 0),
                )
            return state

        fresh = 0
        for record in records:
            if record.offset <= offsets.get(record.topic, -1):
                result.skipped += 1
                continue
            offsets[record.topic] = record.offset
            fresh += 1
            source = self.sources[record.topic]
            try:
                if source == "price":
                    point = _decode_point(record)
                    if book.add(point.exchange, point.symbol, point.time, point.price):
                        # A price can settle any chain's waiting transfers.
                        for chain_id in _with_pending(stored_chains, chains):
                            self._release(chain(chain_id), book, result)
                    continue
                if source == "block":
                    block = _decode_chain_record(BLOCK_CODEC, record)
                    state = chain(block.chain_id)
                    state.time = max(state.time, block.timestamp)
                    view = BlockView(
                        block.chain_id,
                        block.number,
                        block.hash,
                        block.timestamp,
                        block.base_fee,
                        block.status,
                    )
                    found = (state.reorg.update(view), state.gas.update(view))
                    result.add(finding for finding in found if finding is not None)
                else:
                    transfer = _decode_chain_record(TRANSFER_CODEC, record)
                    state = chain(transfer.chain_id)
                    state.time = max(state.time, transfer.timestamp)
                    result.add(state.whale.observe(transfer, result.pricing))
                self._release(state, book, result)
            except SchemaError as exc:
                result.dead_letters.append(reject_record(record, exc.reason, "schema", COMPONENT))
        if not fresh:
            return
        result.events += fresh
        merged = dict(stored_chains)
        merged.update({str(chain_id): state.to_dict() for chain_id, state in chains.items()})
        result.states[key] = {"offsets": offsets, "book": book.to_dict(), "chains": merged}

    def _release(self, state: ChainState, book: PriceBook, result: OnchainResult) -> None:
        if state.whale.pending:
            result.add(state.whale.release(book, state.time, result.pricing))


def _with_pending(stored: dict[str, Any], loaded: dict[int, ChainState]) -> list[int]:
    """Chains of the partition with transfers waiting for a price, in id order."""
    waiting = {cid for cid, state in loaded.items() if state.whale.pending}
    waiting.update(
        int(cid)
        for cid, state in stored.items()
        if int(cid) not in loaded and state.get("whale", {}).get("pending")
    )
    return sorted(waiting)


def _decode_point(record: RawRecord) -> PricePoint:
    if record.value is None:
        raise SchemaError("empty record value")
    try:
        return POINT_DECODER.decode(record.value)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SchemaError(f"invalid price point: {exc}") from exc


def _decode_chain_record(codec: Any, record: RawRecord) -> Any:
    """An on-chain event whose record key is its chain id (one partition per chain)."""
    event = codec.decode(record.value)
    if record.key != str(event.chain_id).encode():
        raise SchemaError(f"record key {record.key!r} is not chain id {event.chain_id}")
    amount = getattr(event, "amount", None)
    if amount is not None and amount < 0:
        raise SchemaError(f"negative amount {amount}")
    return event
