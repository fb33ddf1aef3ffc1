"""Chain reorganizations: one anomaly per reorg, scored by its depth.

Pure, per chain. The chain feed publishes a reorg as one run of `reorged` block records
(the orphaned blocks, lowest first) followed by the new canonical blocks
(`ingest.chain.follower`). A run therefore ends at the next block record that is not
`reorged`; its depth is the number of orphaned blocks in it. The run is kept in state
between micro-batches, so how the records were batched never changes the result.

The anomaly's id ends with the hash of the first orphaned block and its event time is
that block's timestamp: a replay, or the same run read twice, gives the same id.
"""

from __future__ import annotations

from typing import Any

from processors.anomalies.findings import Finding
from processors.anomalies.gas_spike import BlockView
from processors.anomalies.rules import ReorgRules


class ReorgTracker:
    """Groups a chain's `reorged` block records into reorg events."""

    def __init__(self, rules: ReorgRules, state: dict[str, Any] | None = None) -> None:
        self.rules = rules
        # The open run: first orphaned block (number, hash, timestamp) and depth so far.
        self.run: dict[str, Any] | None = (state or {}).get("run")

    def update(self, block: BlockView) -> Finding | None:
        """Fold in one block record, in the chain's order; the reorg it closes, if any."""
        if block.status == "reorged":
            if self.run is None:
                self.run = {
                    "number": block.number,
                    "hash": block.hash,
                    "timestamp": block.timestamp,
                    "depth": 0,
                }
            self.run["depth"] += 1
            return None
        if self.run is None:
            return None
        run, self.run = self.run, None
        return self._finding(block.chain_id, run, block)

    def _finding(
        self, chain_id: int, run: dict[str, Any], replacement: BlockView
    ) -> Finding | None:
        depth = run["depth"]
        severity = self.rules.thresholds.severity(depth)
        if severity is None:
            return None
        blocks = "block" if depth == 1 else "blocks"
        return Finding(
            kind="reorg",
            subject=f"chain:{chain_id}",
            chain_id=chain_id,
            ts=run["timestamp"],
            score=float(depth),
            severity=severity,
            observed=float(depth),
            expected=0.0,
            reference=run["hash"],
            explanation=(
                f"chain {chain_id} reorganized: {depth} {blocks} from block {run['number']} "
                f"({run['hash'][:10]}...) were orphaned; the canonical chain continues with "
                f"block {replacement.number} ({replacement.hash[:10]}...)"
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run}
