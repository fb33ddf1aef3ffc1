"""What a detector found, and the `Anomaly` record it becomes.

Detectors return `Finding`s (plain data, no Kafka); `anomaly_record()` turns one into
the `anomalies` topic's key and canonical JSON. The id is deterministic, built from the
kind, subject, interval and event time, so a replay re-emits the same id and every
consumer (the ClickHouse table, the alert rules, webhook receivers) can de-duplicate.
Chain detectors (gas spikes, reorgs, whale transfers) return `Finding`s the same way,
with `chain_id` set, the subject `chain:N` and a `reference` in place of the event time
in the id (block hash, first orphaned block hash, `tx_hash:log_index`), because two
blocks can share a timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.codec import codec_for
from schemas.events import Anomaly

ANOMALY_CODEC = codec_for(Anomaly)


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomaly, before it is encoded."""

    kind: str
    subject: str
    ts: int
    score: float
    severity: str
    observed: float
    expected: float
    explanation: str
    exchange: str | None = None
    symbol: str | None = None
    interval: str | None = None
    chain_id: int | None = None
    # What identifies the observation when event time does not (a block hash, a
    # transaction's log): it replaces `ts` in the id.
    reference: str | None = None

    @property
    def anomaly_id(self) -> str:
        """`kind:subject[:interval]:ts`, or `kind:subject:reference`: the same observation
        always gets the same id."""
        if self.reference is not None:
            return f"{self.kind}:{self.subject}:{self.reference}"
        parts = [self.kind, self.subject, *([self.interval] if self.interval else []), str(self.ts)]
        return ":".join(parts)


def to_anomaly(finding: Finding) -> Any:
    """The `Anomaly` wire struct of a finding."""
    return ANOMALY_CODEC.struct(
        anomaly_id=finding.anomaly_id,
        kind=finding.kind,
        subject=finding.subject,
        exchange=finding.exchange,
        symbol=finding.symbol,
        interval=finding.interval,
        chain_id=finding.chain_id,
        ts=finding.ts,
        score=finding.score,
        severity=finding.severity,
        observed=finding.observed,
        expected=finding.expected,
        explanation=finding.explanation,
    )


def anomaly_record(finding: Finding) -> tuple[bytes, bytes]:
    """Key (the subject) and canonical JSON value of the finding's `anomalies` record."""
    return finding.subject.encode(), ANOMALY_CODEC.encode(to_anomaly(finding))


def signed_percent(fraction: float) -> str:
    """`+3.05%` / `-0.42%`: a relative change as a person reads it."""
    return f"{fraction * 100:+.2f}%"


def shown_price(value: float) -> str:
    """Two decimals for prices >= 1, six significant digits below (like signal texts)."""
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.6g}"
