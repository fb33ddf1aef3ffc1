"""Turns a micro-batch of `signals` and `anomalies` records into `alerts`.

The thin layer between Kafka records and the pure `AlertEngine`: decode, dead-letter bad
input, skip records the state has already seen, and keep each source key's cool-downs.
State is per source record key (`exchange:symbol`, or `chain:N`), which both source
topics share, so the table is co-partitioned with them; it holds the last offset read
from each topic and the last firing time per (rule, kind, subject).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from processors.alerts import ALERT_CODEC, AlertEngine
from processors.candle_stream import RawRecord, StateLoader
from schemas.codec import codec_for
from schemas.dead_letters import reject_record
from schemas.events import Anomaly, Signal
from schemas.exceptions import SchemaError

ANOMALY_CODEC = codec_for(Anomaly)
SIGNAL_CODEC = codec_for(Signal)
COMPONENT = "processor"
Source = Literal["signal", "anomaly"]


@dataclass
class AlertResult:
    """What one micro-batch of source events produced."""

    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes, bytes]] = field(default_factory=list)
    states: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    fired: Counter[str] = field(default_factory=Counter)  # by rule
    suppressed: Counter[str] = field(default_factory=Counter)  # by rule, by the cool-down
    events: int = 0
    skipped: int = 0


class AlertStream:
    """Alert rules over signals and anomalies; `sources` maps a topic name to its kind."""

    def __init__(self, engine: AlertEngine, sources: dict[str, Source]) -> None:
        self.engine = engine
        self.sources = sources

    def process(self, records: Iterable[RawRecord], load_state: StateLoader) -> AlertResult:
        """Decode and evaluate a batch; return alerts and new state per source key."""
        result = AlertResult()
        by_key: dict[bytes, list[tuple[RawRecord, Source, Any]]] = defaultdict(list)
        for record in records:
            source = self.sources[record.topic]
            codec = ANOMALY_CODEC if source == "anomaly" else SIGNAL_CODEC
            try:
                event = codec.decode(record.value)
            except SchemaError as exc:
                result.dead_letters.append(reject_record(record, exc.reason, "schema", COMPONENT))
                continue
            by_key[record.key or b""].append((record, source, event))
        for key, items in by_key.items():
            self._process_key(key, items, load_state(key), result)
        return result

    def _process_key(
        self,
        key: bytes,
        items: list[tuple[RawRecord, Source, Any]],
        saved: dict[str, Any] | None,
        result: AlertResult,
    ) -> None:
        offsets: dict[str, int] = dict((saved or {}).get("offsets", {}))
        cooldowns: dict[str, int] = dict((saved or {}).get("cooldowns", {}))
        fresh = 0
        for record, source, event in items:
            if record.offset <= offsets.get(record.topic, -1):
                result.skipped += 1
                continue
            offsets[record.topic] = record.offset
            fresh += 1
            decide = self.engine.on_anomaly if source == "anomaly" else self.engine.on_signal
            for decision in decide(event, cooldowns):
                if decision.alert is None:
                    result.suppressed[decision.rule] += 1
                else:
                    result.fired[decision.rule] += 1
                    alert = ALERT_CODEC.encode(decision.alert)
                    result.alerts.append((decision.rule.encode(), alert))
        if fresh:
            result.events += fresh
            result.states[key] = {"offsets": offsets, "cooldowns": cooldowns}
