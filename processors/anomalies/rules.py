"""Thresholds of the market and on-chain anomaly detectors, read from a TOML file.

`anomaly_rules.toml` in this package is the default; `load_anomaly_rules(path)` reads a
user's copy (setting `SIGFLOW_ANOMALY_RULES`). Every section is optional and falls back
to the packaged values field by field, so a user's file only names what it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from processors.exceptions import AnomalyRuleError
from processors.rules_files import packaged_rules, parse_toml, read_rules
from schemas.events import Severity

DEFAULT_RULES_RESOURCE = "anomaly_rules.toml"


class Thresholds(BaseModel):
    """Scores at which an anomaly is info, warning and critical (info is the minimum)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    info: float = Field(gt=0, allow_inf_nan=False)
    warning: float = Field(gt=0, allow_inf_nan=False)
    critical: float = Field(gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.info <= self.warning <= self.critical:
            raise ValueError(
                f"thresholds must satisfy info <= warning <= critical, got "
                f"{self.info:g}, {self.warning:g}, {self.critical:g}"
            )
        return self

    def levels(self) -> tuple[tuple[Severity, float], ...]:
        """(severity, threshold) from the lowest to the highest."""
        return (("info", self.info), ("warning", self.warning), ("critical", self.critical))

    def severity(self, score: float) -> Severity | None:
        """The highest severity whose threshold `score` reaches, None below info."""
        found: Severity | None = None
        for name, threshold in self.levels():
            if score >= threshold:
                found = name
        return found


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    thresholds: Thresholds


class RobustSection(_Section):
    """A detector scoring a robust z-score against a rolling window of its own history."""

    window: int = Field(ge=5, le=10_000, description="Values in the rolling baseline.")
    min_history: int = Field(ge=5, description="Values needed before anything is scored.")

    @model_validator(mode="after")
    def _history_fits(self) -> RobustSection:
        if self.min_history > self.window:
            raise ValueError(f"min_history {self.min_history} exceeds window {self.window}")
        return self


class PriceJumpRules(RobustSection):
    min_sigma: float = Field(gt=0, description="Floor of the robust sigma of log returns.")


class VolumeSpikeRules(RobustSection):
    min_sigma: float = Field(gt=0, description="Floor of the robust sigma of log volume.")


class StaleFeedRules(_Section):
    min_trades: int = Field(ge=2, description="Trades seen before a feed is watched.")
    gap_span: int = Field(ge=1, description="EWMA span, in trades, of the usual gap.")
    min_silence_ms: int = Field(ge=0, description="Shorter silences are never flagged.")


class DivergenceRules(RobustSection):
    min_bps: float = Field(ge=0, description="Smaller departures from usual never count.")
    min_sigma_bps: float = Field(gt=0, description="Floor of the robust sigma, in bps.")
    min_exchanges: int = Field(ge=2, description="Exchanges needed in an aligned window.")
    max_wait_intervals: int = Field(
        ge=1, description="Windows a slow exchange may lag before it is left out."
    )


# -- on-chain detectors ----------------------------------------------------------------


class GasSpikeRules(RobustSection):
    min_sigma: float = Field(gt=0, description="Floor of the robust sigma of ln(base fee).")
    min_ratio: float = Field(ge=1, description="Base fee / median needed besides the score.")


class ReorgRules(_Section):
    """Thresholds are reorg depths in blocks (info is the shallowest reported)."""


class WhaleTransferRules(_Section):
    """Thresholds are USD values (info is the whale threshold itself)."""

    memory_blocks: int = Field(
        ge=1, description="Blocks a transfer is remembered, so a re-publication is not re-flagged."
    )


class AnomalyRules(BaseModel):
    """Every detector's settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    price_jump: PriceJumpRules
    volume_spike: VolumeSpikeRules
    stale_feed: StaleFeedRules
    divergence: DivergenceRules
    gas_spike: GasSpikeRules
    reorg: ReorgRules
    whale_transfer: WhaleTransferRules


def _reasons(exc: ValidationError) -> str:
    """Pydantic's errors as one line: `section.field: why; ...`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: " + str(error["msg"]).removeprefix("Value error, "))
    return "; ".join(parts)


def _merge(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for name, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = _merge(merged[name], value)
        else:
            merged[name] = value
    return merged


def _default_document() -> dict[str, Any]:
    default = packaged_rules(DEFAULT_RULES_RESOURCE)
    return parse_toml(default.text, source=default.source, error=AnomalyRuleError)


def parse_anomaly_rules(text: str, *, source: str = "<string>") -> AnomalyRules:
    """Rules from the text of a rules file, completed with the packaged defaults."""
    document = parse_toml(text, source=source, error=AnomalyRuleError)
    try:
        return AnomalyRules.model_validate(_merge(_default_document(), document))
    except ValidationError as exc:
        raise AnomalyRuleError(f"{source}: {_reasons(exc)}") from exc


def load_anomaly_rules(path: Path | None = None) -> AnomalyRules:
    """Rules from a TOML file, or the packaged defaults when `path` is None."""
    file = read_rules(
        path, default=DEFAULT_RULES_RESOURCE, error=AnomalyRuleError, what="anomaly rules"
    )
    return parse_anomaly_rules(file.text, source=file.source)
