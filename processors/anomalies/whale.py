"""Whale transfers: a transfer whose USD value, at sigflow's own price, is large.

Pure, per chain. A transfer is judged once, the first time it is seen not removed
(identified by `tx_hash:log_index`, which a `confirmed` re-publication and a reorg's
re-inclusion of the same transaction share), so neither a confirmation nor a replay
flags it twice. Its USD value is `amount x price`:

- tokens with a fixed USD price (stablecoins) are judged at once;
- tokens mapped to an asset wait in `pending` until the `PriceBook` is ready for their
  event time (see `pricing.py`), or until the chain's own event time passed theirs by
  `max_wait_ms` (then they are priced with what is known);
- unmapped tokens, and transfers for which no fresh price exists, get no USD value and
  no anomaly; they are counted (`counts`), never guessed.

A `removed=true` retraction never creates an anomaly. If the transfer was still waiting
for a price it is dropped (and could be judged afresh if it comes back); if it was
already flagged, the earlier anomaly stands (the `Anomaly` contract has no retraction)
and the retraction is counted: readers drop retracted whales by joining the anomaly's
`tx_hash:log_index` with `onchain_transfers_canonical` (see the README).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from processors.anomalies.findings import Finding
from processors.anomalies.rules import WhaleTransferRules
from processors.pricing import PriceBook, Quote, TokenPrices

# Per seen transfer: [block number, flagged as a whale (0/1)]
BLOCK, FLAGGED = 0, 1


class WhaleWatch:
    """Prices one chain's transfers and flags the whales (JSON state for a table)."""

    def __init__(
        self,
        rules: WhaleTransferRules,
        prices: TokenPrices,
        chain_id: int,
        state: dict[str, Any] | None = None,
    ) -> None:
        state = state or {}
        self.rules, self.prices, self.chain_id = rules, prices, chain_id
        self.pending: list[dict[str, Any]] = [dict(entry) for entry in state.get("pending", [])]
        self.seen: dict[str, list[int]] = {k: list(v) for k, v in state.get("seen", {}).items()}
        self.tip: int = state.get("tip", -1)  # highest block number seen

    def observe(self, transfer: Any, counts: Counter[str]) -> list[Finding]:
        """Fold in one `onchain.transfers` record, in the chain's order."""
        key = f"{transfer.tx_hash}:{transfer.log_index}"
        self.tip = max(self.tip, transfer.block)
        if transfer.removed:
            self._retract(key, counts)
            return []
        if key in self.seen:
            return []  # a `confirmed` re-publication, or a re-inclusion after a reorg
        self.seen[key] = [transfer.block, 0]
        self._forget_old()
        token = transfer.token_symbol.upper()
        entry = {
            "key": key,
            "block": transfer.block,
            "ts": transfer.timestamp,
            "token": transfer.token_symbol,
            "amount": format(transfer.amount, "f"),
            "from": transfer.from_address,
            "to": transfer.to_address,
        }
        fixed = self.prices.fixed_usd.get(token)
        if fixed is not None:
            found = self._judge(entry, Quote(fixed, None, None, None), counts)
            return [found] if found else []
        asset = self.prices.assets.get(token)
        if asset is None:
            counts["unpriced_unmapped"] += 1
            return []
        self.pending.append({**entry, "asset": asset})
        return []

    def release(self, book: PriceBook, chain_time: int, counts: Counter[str]) -> list[Finding]:
        """Judge the waiting transfers whose price is settled (or waited long enough)."""
        findings: list[Finding] = []
        waiting: list[dict[str, Any]] = []
        max_wait = self.prices.pricing.max_wait_ms
        for entry in self.pending:
            if not (
                book.ready(entry["asset"], entry["ts"]) or chain_time - max_wait >= entry["ts"]
            ):
                waiting.append(entry)
                continue
            quote = book.quote(entry["asset"], entry["ts"])
            if quote is None:
                counts["unpriced_no_price"] += 1
                continue
            found = self._judge(entry, quote, counts)
            if found is not None:
                findings.append(found)
        self.pending = waiting
        return findings

    def _retract(self, key: str, counts: Counter[str]) -> None:
        waiting = [entry for entry in self.pending if entry["key"] != key]
        if len(waiting) < len(self.pending):
            self.pending = waiting
            del self.seen[key]
            counts["retracted_unpriced"] += 1
        elif self.seen.get(key, [0, 0])[FLAGGED]:
            counts["retracted_whale"] += 1

    def _forget_old(self) -> None:
        horizon = self.tip - self.rules.memory_blocks
        waiting = {entry["key"] for entry in self.pending}
        for key in [k for k, v in self.seen.items() if v[BLOCK] < horizon and k not in waiting]:
            del self.seen[key]

    def _judge(self, entry: dict[str, Any], quote: Quote, counts: Counter[str]) -> Finding | None:
        counts["priced"] += 1
        usd = float(Decimal(entry["amount"])) * quote.price
        severity = self.rules.thresholds.severity(usd)
        if severity is None:
            return None
        self.seen[entry["key"]][FLAGGED] = 1
        threshold = self.rules.thresholds.info
        amount = format(Decimal(entry["amount"]).normalize(), ",f")
        tx_hash, _, log_index = entry["key"].partition(":")
        return Finding(
            kind="whale_transfer",
            subject=f"chain:{self.chain_id}",
            chain_id=self.chain_id,
            exchange=quote.exchange,
            symbol=quote.symbol,
            ts=entry["ts"],
            score=usd / threshold,
            severity=severity,
            observed=usd,
            expected=threshold,
            reference=entry["key"],
            explanation=(
                f"{amount} {entry['token']} worth ${usd:,.0f} moved on chain {self.chain_id} "
                f"from {entry['from']} to {entry['to']} (block {entry['block']}, tx "
                f"{tx_hash} log {log_index}), priced at {quote.price:,.2f} USD "
                f"({describe(quote)}); the whale threshold is ${threshold:,.0f}"
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, "seen": self.seen, "tip": self.tip}


def describe(quote: Quote) -> str:
    """Where a price came from, for a person."""
    if quote.exchange is None or quote.time is None:
        return "fixed price"
    when = datetime.fromtimestamp(quote.time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{quote.exchange} {quote.symbol} close at {when}"
