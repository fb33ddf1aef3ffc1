"""Alert rules: which signals and anomalies become `alerts`, and how often.

Pure logic, no Kafka. Rules live in a TOML file (`alert_rules.toml` in this package is
the default; `SIGFLOW_ALERT_RULES` points at a user's copy). A rule matches one source,
`signal` or `anomaly`, filtered by kinds (anomaly kinds, or signal rule ids), exchanges,
symbols, candle intervals and a minimum severity/score (anomalies) or strength/direction
(signals).

Cool-down, in event time: after a rule fires for a (subject, kind), further matches with
an event time less than `cooldown` later are suppressed (and counted), so a storm of
anomalies becomes one alert. The clock is the source events' own time, never the wall
clock, and each (rule, subject, kind) sees one source stream in its own order (the
events of one kind for one subject come from a single ordered fold upstream), so a
replay fires and suppresses exactly the same alerts. The caller keeps the cool-down
state (`Cooldowns`, a dict of last firing times) in a Faust table.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from processors.candles import INTERVAL_UNITS_MS, interval_ms
from processors.exceptions import AlertRuleError
from processors.rules_files import parse_toml, read_rules
from schemas.codec import codec_for
from schemas.events import SEVERITY_RANK, Alert, AnomalyKind, Severity

DEFAULT_RULES_RESOURCE = "alert_rules.toml"
ALERT_CODEC = codec_for(Alert)
ANOMALY_KINDS = frozenset(get_args(AnomalyKind))
KIND_TITLES = {
    "price_jump": "Price jump",
    "volume_spike": "Volume spike",
    "stale_feed": "Stale feed",
    "divergence": "Cross-exchange divergence",
    "whale_transfer": "Whale transfer",
    "gas_spike": "Gas price spike",
    "reorg": "Chain reorg",
}

Cooldowns = dict[str, int]  # "rule|kind|subject" -> event time of the last alert fired


def duration_ms(text: str) -> int:
    """Milliseconds in `0s`, `90s`, `15m`, `4h`, `1d`."""
    amount, unit = text[:-1], text[-1:]
    if not amount.isdigit() or unit not in INTERVAL_UNITS_MS:
        raise ValueError(f"duration {text!r} must look like 0s, 90s, 15m, 4h or 1d")
    return int(amount) * INTERVAL_UNITS_MS[unit]


class AlertRule(BaseModel):
    """One alert rule of the rules file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)
    source: Literal["signal", "anomaly"]
    kinds: tuple[str, ...] = ()
    exchanges: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    intervals: tuple[str, ...] = ()
    min_severity: Severity = "info"
    min_score: float = Field(0.0, ge=0)
    min_strength: float = Field(0.0, ge=0, le=1)
    directions: tuple[Literal[1, -1], ...] = ()
    severity: Severity = Field("info", description="Severity of alerts from signals.")
    cooldown: str = "0s"

    @field_validator("cooldown")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_ms(value)
        return value

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for interval in value:
            interval_ms(interval)
        return value

    @property
    def cooldown_ms(self) -> int:
        return duration_ms(self.cooldown)

    def check_source_fields(self) -> None:
        """Refuse filters that cannot apply to the rule's source (a silent no-op otherwise)."""
        if self.source == "anomaly":
            unknown = sorted(set(self.kinds) - ANOMALY_KINDS)
            if unknown:
                raise ValueError(
                    f"unknown anomaly kind(s) {unknown}; known: {', '.join(sorted(ANOMALY_KINDS))}"
                )
        other_source: tuple[str, ...] = ("min_strength", "directions", "severity")
        if self.source == "signal":
            other_source = ("min_severity", "min_score")
        misplaced = [name for name in other_source if name in self.model_fields_set]
        if misplaced:
            raise ValueError(f"{', '.join(misplaced)} do not apply to {self.source} rules")

    def matches(self, event: Any, kind: str) -> bool:
        """Whether a decoded signal or anomaly passes this rule's filters."""
        if self.kinds and kind not in self.kinds:
            return False
        if self.exchanges and event.exchange not in self.exchanges:
            return False
        if self.symbols and event.symbol not in self.symbols:
            return False
        # Events scored on no candle (stale feeds, on-chain kinds) pass an interval filter.
        if self.intervals and event.interval is not None and event.interval not in self.intervals:
            return False
        if self.source == "anomaly":
            return (
                SEVERITY_RANK[event.severity] >= SEVERITY_RANK[self.min_severity]
                and event.score >= self.min_score
            )
        return event.strength >= self.min_strength and (
            not self.directions or event.direction in self.directions
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What one rule did with one source event: the alert, or None if suppressed."""

    rule: str
    alert: Any | None


def parse_alert_rules(text: str, *, source: str = "<string>") -> list[AlertRule]:
    """Rules from the text of a rules file, in file order; `source` names it in errors."""
    document = parse_toml(text, source=source, error=AlertRuleError)
    extra = sorted(set(document) - {"rules"})
    if extra:
        raise AlertRuleError(f"{source}: unknown top-level key(s) {extra}; expected [[rules]]")
    tables = document.get("rules", [])
    if not isinstance(tables, list):
        raise AlertRuleError(f"{source}: `rules` must be an array of [[rules]] tables")
    rules: list[AlertRule] = []
    for number, table in enumerate(tables, start=1):
        where = f"{source}: rule #{number}"
        if isinstance(table, dict) and table.get("id"):
            where += f" {table['id']!r}"
        try:
            rule = AlertRule.model_validate(table)
            rule.check_source_fields()
        except ValidationError as exc:
            reasons = "; ".join(
                ".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()
            )
            raise AlertRuleError(f"{where}: {reasons}") from exc
        except ValueError as exc:
            raise AlertRuleError(f"{where}: {exc}") from exc
        if any(rule.id == known.id for known in rules):
            raise AlertRuleError(f"{where}: duplicate id {rule.id!r}; ids must be unique")
        rules.append(rule)
    return rules


def load_alert_rules(
    path: Path | None = None, *, built_intervals: Collection[str] | None = None
) -> list[AlertRule]:
    """Rules from a TOML file, or the packaged defaults when `path` is None.

    With `built_intervals` (the candle intervals the processor builds), a rule filtering
    on any other interval is refused: it would silently never match.
    """
    file = read_rules(
        path, default=DEFAULT_RULES_RESOURCE, error=AlertRuleError, what="alert rules"
    )
    rules = parse_alert_rules(file.text, source=file.source)
    if built_intervals is not None:
        for rule in rules:
            unbuilt = [interval for interval in rule.intervals if interval not in built_intervals]
            if unbuilt:
                raise AlertRuleError(
                    f"{file.source}: rule {rule.id!r}: the processor builds no "
                    f"{', '.join(unbuilt)} candles "
                    f"(SIGFLOW_CANDLE_INTERVALS: {', '.join(built_intervals)})"
                )
    return rules


class AlertEngine:
    """Applies every rule to one source event, with the cool-downs the caller keeps."""

    def __init__(self, rules: list[AlertRule]) -> None:
        self.rules = tuple(rules)

    def on_anomaly(self, anomaly: Any, cooldowns: Cooldowns) -> list[Decision]:
        """Decisions of the anomaly rules that match a decoded `Anomaly`."""
        return self._decide("anomaly", anomaly, anomaly.kind, anomaly.subject, cooldowns)

    def on_signal(self, signal: Any, cooldowns: Cooldowns) -> list[Decision]:
        """Decisions of the signal rules that match a decoded `Signal`."""
        subject = f"{signal.exchange}:{signal.symbol}"
        return self._decide("signal", signal, signal.rule, subject, cooldowns)

    def _decide(
        self, source: str, event: Any, kind: str, subject: str, cooldowns: Cooldowns
    ) -> list[Decision]:
        ts = event.ts if source == "anomaly" else event.open_time
        decisions = []
        for rule in self.rules:
            if rule.source != source or not rule.matches(event, kind):
                continue
            slot = f"{rule.id}|{kind}|{subject}"
            last = cooldowns.get(slot)
            if last is not None and ts < last + rule.cooldown_ms:
                decisions.append(Decision(rule.id, None))
                continue
            cooldowns[slot] = ts
            alert = anomaly_alert(rule, event) if source == "anomaly" else signal_alert(rule, event)
            decisions.append(Decision(rule.id, alert))
        return decisions


def anomaly_alert(rule: AlertRule, anomaly: Any) -> Any:
    """The `Alert` a rule raises for an anomaly; its id is the rule plus the anomaly id."""
    title = (
        f"{KIND_TITLES.get(anomaly.kind, anomaly.kind)} on {anomaly.subject} "
        f"({anomaly.severity}, score {anomaly.score:.1f})"
    )
    return ALERT_CODEC.struct(
        alert_id=f"{rule.id}:{anomaly.anomaly_id}",
        rule=rule.id,
        source="anomaly",
        kind=anomaly.kind,
        severity=anomaly.severity,
        subject=anomaly.subject,
        exchange=anomaly.exchange,
        symbol=anomaly.symbol,
        chain_id=anomaly.chain_id,
        ts=anomaly.ts,
        title=title,
        explanation=anomaly.explanation,
        score=anomaly.score,
    )


def signal_alert(rule: AlertRule, signal: Any) -> Any:
    """The `Alert` a rule raises for a signal; its id names the rule and the signal."""
    subject = f"{signal.exchange}:{signal.symbol}"
    mood = "Bullish" if signal.direction == 1 else "Bearish"
    return ALERT_CODEC.struct(
        alert_id=f"{rule.id}:signal:{signal.rule}:{subject}:{signal.interval}:{signal.open_time}",
        rule=rule.id,
        source="signal",
        kind=signal.rule,
        severity=rule.severity,
        subject=subject,
        exchange=signal.exchange,
        symbol=signal.symbol,
        ts=signal.open_time,
        title=f"{mood} {signal.rule} on {subject} {signal.interval} at {signal.price:g}",
        explanation=signal.explanation,
        direction=signal.direction,
        price=signal.price,
    )
