"""Gas-price spikes: a new block's base fee as a robust z-score of the chain's recent ones.

Pure, per chain. Base fees are multiplicative (EIP-1559 moves them by up to 12.5 % a
block), so they are scored in logs against the rolling median and MAD of the last
`window` blocks (see `rolling.py`); only spikes up count, and the fee must also be
`min_ratio` times the median, so a tiny absolute move on a very calm chain is no spike.

Each block is scored once, the first time its number is seen (`new`, or `confirmed` when
the chain feed caught up past the confirmation depth); its later `confirmed` record is
ignored. A `reorged` record rewinds the scored height to below the orphaned block, so
the replacement blocks are scored too; the orphans' fees stay in the baseline (they were
real observations of demand). One anomaly per severity level per spike: a block scoring
below info ends the spike, so a congested hour is not a storm of anomalies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from processors.anomalies.findings import Finding
from processors.anomalies.rolling import RollingRobust
from processors.anomalies.rules import GasSpikeRules
from schemas.events import SEVERITY_RANK

GWEI = 1e9


@dataclass(frozen=True, slots=True)
class BlockView:
    """What the chain detectors read from an `onchain.blocks` record."""

    chain_id: int
    number: int
    hash: str
    timestamp: int
    base_fee: int | None
    status: str


class GasSpikeDetector:
    """Scores each new block's base fee against the chain's recent blocks."""

    def __init__(self, rules: GasSpikeRules, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self.rules = rules
        self.log_fees = RollingRobust(rules.window, state.get("log_fees", [])[-rules.window :])
        self.scored_to: int = state.get("scored_to", -1)  # highest block number scored
        self.level: int = state.get("level", -1)  # severity reported in the current spike

    def update(self, block: BlockView) -> Finding | None:
        """Fold in one block record, in the chain's order; the spike it is, if any."""
        if block.status == "reorged":
            self.scored_to = min(self.scored_to, block.number - 1)
            return None
        if block.number <= self.scored_to:
            return None  # already scored (its `confirmed` record, or a re-read)
        self.scored_to = block.number
        if block.base_fee is None:
            return None  # before EIP-1559: no base fee to score
        value = math.log(max(block.base_fee, 1))
        finding = None
        if len(self.log_fees) >= self.rules.min_history:
            finding = self._score(block, value)
        self.log_fees.push(value)
        return finding

    def _score(self, block: BlockView, value: float) -> Finding | None:
        z, center, _ = self.log_fees.robust_z(value, self.rules.min_sigma)
        usual = math.exp(center)
        ratio = block.base_fee / usual if block.base_fee else 0.0
        severity = self.rules.thresholds.severity(z) if ratio >= self.rules.min_ratio else None
        if severity is None:
            self.level = -1
            return None
        if SEVERITY_RANK[severity] <= self.level:
            return None  # this spike was already reported at this level
        self.level = SEVERITY_RANK[severity]
        return Finding(
            kind="gas_spike",
            subject=f"chain:{block.chain_id}",
            chain_id=block.chain_id,
            ts=block.timestamp,
            score=z,
            severity=severity,
            observed=float(block.base_fee or 0),
            expected=usual,
            reference=block.hash,
            explanation=(
                f"block {block.number} on chain {block.chain_id} has a base fee of "
                f"{(block.base_fee or 0) / GWEI:,.4g} gwei, {ratio:.1f}x the median "
                f"{usual / GWEI:,.4g} gwei of the last {len(self.log_fees)} blocks: "
                f"{z:.1f} robust sigmas above it in log terms"
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_fees": self.log_fees.values(),
            "scored_to": self.scored_to,
            "level": self.level,
        }
