"""Trading signals from two consecutive candles' indicator values, driven by a rules file.

Pure logic, no Kafka: the processor keeps the previous candle's values and calls
`SignalEngine.evaluate()` once per closed candle. What counts as a signal lives in a TOML
file (`signal_rules.toml` in this package is the default; `load_rules(path)` reads a
user's copy), so traders change rules without touching code.

Rule kinds (a closed set, `RULE_KINDS`):

- `crossover`: series `fast` crosses series `slow` (`ema_12` over `ema_26`, `close`
  over `bb_upper`, ...).
- `threshold_cross`: series `series` crosses the constant `level` (`rsi_14` and 30).

Both reduce to one line, `gap = a - b` (`fast - slow`, or `series - level`), and fire
when the gap changes side between the previous and the current candle.

Equality convention: a value exactly on the line belongs to the upper side (`gap >= 0`
is "above"). A crossing is a change of side, so upward means strictly below, then at or
above; downward means at or above, then strictly below. Every change of side fires once
and the directions alternate; a series that touches the line from above, or rests on it,
fires nothing. (Reaching the line from below counts as crossing up: with only two
candles there is no way to tell a touch from a tiny cross, and `min_strength` is the knob
that silences such whipsaws.)

Strength, the same formula for both kinds: how far the gap moved through the line during
the candle, in units of `scale`, clipped to 1:

    strength = min(1, |gap_now - gap_before| / scale)

`scale` is the rule's `strength_scale` (in the series' own units, e.g. 10 RSI points)
if set, else the current candle's `atr_14` (one average true range is full strength),
else its close when ATR is still warming up (only custom series can fire before ATR,
which is ready at candle 14). A crossing always moves the gap, so strength is > 0 (it is
floored at the smallest positive float against underflow).
"""

from __future__ import annotations

import math
import string
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from processors.exceptions import IndicatorInputError, SignalRuleError
from processors.indicators import INDICATOR_NAMES
from processors.rules_files import parse_toml, read_rules

DEFAULT_RULES_RESOURCE = "signal_rules.toml"

SERIES_NAMES: tuple[str, ...] = (*INDICATOR_NAMES, "close")
"""What a rule may watch: every canonical indicator plus the candle's close."""

# The values a series can take, (low, high), so a level that can never be crossed is
# refused at load time. A level L can be crossed iff low < L <= high (some value is
# strictly below it, some at or above). Series not listed are unbounded (MACD lines).
_NON_NEGATIVE = (0.0, math.inf)
SERIES_RANGES: dict[str, tuple[float, float]] = {
    "rsi_14": (0.0, 100.0),
    "atr_14": _NON_NEGATIVE,
    "realized_vol_30": _NON_NEGATIVE,
    **{
        name: _NON_NEGATIVE
        for name in ("close", "sma_20", "ema_12", "ema_26", "bb_upper", "bb_middle")
    },
    "bb_lower": (-math.inf, math.inf),  # middle minus two deviations can go below zero
    "vwap": _NON_NEGATIVE,
}

# Never 0: a fired signal always has positive strength, even if the division underflows.
_SMALLEST_STRENGTH = sys.float_info.min

Side = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class FiredSignal:
    """One rule that fired on one candle.

    `direction` is 1 (bullish) or -1 (bearish), `strength` in (0, 1] (see the module
    docstring), `explanation` the rule's template filled with this candle's numbers.
    """

    rule: str
    direction: int
    strength: float
    explanation: str


class ShownNumber(float):
    """A float that formats itself readably when a template gives no format spec.

    `{fast}` shows two decimals for values >= 1 in magnitude ("8047.98", "31.20") and six
    significant digits below that, so one template reads well for BTC and for a coin
    priced 0.00001234; an explicit spec such as `{fast:.4f}` still works as for a float.
    """

    def __format__(self, spec: str) -> str:
        if spec:
            return float.__format__(self, spec)
        value = float(self)
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.6g}"


def crossing(gap_before: float, gap_now: float) -> Side | None:
    """Which way `gap = a - b` crossed the line between two candles, or None.

    At-or-above is the upper side (see the module docstring), so every change of side is
    reported exactly once and a touch from above is not a crossing.
    """
    was_above, is_above = gap_before >= 0, gap_now >= 0
    if was_above == is_above:
        return None
    return "up" if is_above else "down"


def crossing_strength(gap_before: float, gap_now: float, scale: float) -> float:
    """How decisively the gap moved through the line, in units of `scale`, in (0, 1]."""
    return max(min(1.0, abs(gap_now - gap_before) / scale), _SMALLEST_STRENGTH)


def _known_series(name: str) -> str:
    if name not in SERIES_NAMES:
        known = ", ".join(sorted(SERIES_NAMES))
        raise ValueError(f"unknown series {name!r}; known: {known}")
    return name


def _check_template(template: str, placeholders: Iterable[str], side: Side) -> None:
    """Fill the template with sample numbers now, so a typo fails at load, not per candle."""
    allowed = tuple(placeholders)
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None and field not in allowed:
            shown = "{" + field + "}" if field else "{} (positional)"
            raise ValueError(
                f"{side}.explanation uses unknown placeholder {shown}; "
                f"allowed: {', '.join('{' + name + '}' for name in allowed)}"
            )
    try:
        template.format_map({name: ShownNumber(1.0) for name in allowed})
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(f"{side}.explanation is not a valid template: {exc}") from exc


class Outcome(BaseModel):
    """What one crossing direction of a rule means: the signal's direction and its words."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    direction: Literal[1, -1]
    explanation: str = Field(min_length=1)

    @field_validator("direction", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        # true == 1 in Python; a TOML `true` here is a mistake, not a bullish signal.
        if isinstance(value, bool):
            raise ValueError("direction must be 1 (bullish) or -1 (bearish), not a boolean")
        return value


class _Rule(BaseModel):
    """Fields and evaluation shared by every rule kind; a kind says which two lines cross."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    PLACEHOLDERS: ClassVar[tuple[str, ...]] = ()

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    up: Outcome | None = None
    down: Outcome | None = None
    min_strength: float = Field(default=0.0, ge=0.0, le=1.0)
    strength_scale: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check_outcomes(self) -> _Rule:
        if self.up is None and self.down is None:
            raise ValueError("needs `up`, `down` or both: which crossing fires, and as what")
        sides: tuple[tuple[Side, Outcome | None], ...] = (("up", self.up), ("down", self.down))
        for side, outcome in sides:
            if outcome is not None:
                _check_template(outcome.explanation, self.PLACEHOLDERS, side)
        return self

    def lines(self, values: Mapping[str, float]) -> tuple[float, float] | None:
        """The two lines (a, b) on one candle, None if either is absent (warming up)."""
        raise NotImplementedError

    def template_fields(
        self, now: tuple[float, float], before: tuple[float, float]
    ) -> dict[str, float]:
        """This kind's numbers for the explanation template."""
        raise NotImplementedError

    def fire(
        self,
        current: Mapping[str, float],
        previous: Mapping[str, float],
        default_scale: float,
    ) -> FiredSignal | None:
        """The signal this rule gives for the candle `current` after `previous`, if any.

        A line that is absent or not finite on either candle is still warming up: the
        rule needs both lines on both candles.
        """
        now = self.lines(current)
        if now is None:
            return None
        before = self.lines(previous)
        if before is None:
            return None
        gap_now, gap_before = now[0] - now[1], before[0] - before[1]
        if (gap_now >= 0) == (gap_before >= 0):
            return None  # no change of side: what nearly every candle gives
        if not (math.isfinite(gap_now) and math.isfinite(gap_before)):
            return None  # a line was not finite, so neither is its gap
        side = crossing(gap_before, gap_now)
        outcome = self.up if side == "up" else self.down if side == "down" else None
        if outcome is None:
            return None
        strength = crossing_strength(gap_before, gap_now, self.strength_scale or default_scale)
        if strength < self.min_strength:
            return None
        fields = self.template_fields(now, before)
        fields |= {"close": current["close"], "strength": strength}
        shown = {name: ShownNumber(value) for name, value in fields.items()}
        return FiredSignal(
            rule=self.id,
            direction=outcome.direction,
            strength=strength,
            explanation=outcome.explanation.format_map(shown),
        )


class CrossoverRule(_Rule):
    """Series `fast` crosses series `slow`; `up` is fast rising through slow."""

    PLACEHOLDERS: ClassVar[tuple[str, ...]] = (
        "fast",
        "slow",
        "fast_prev",
        "slow_prev",
        "gap",
        "close",
        "strength",
    )

    kind: Literal["crossover"]
    fast: str
    slow: str

    _series_known = field_validator("fast", "slow")(_known_series)

    @model_validator(mode="after")
    def _two_series(self) -> CrossoverRule:
        if self.fast == self.slow:
            raise ValueError(f"fast and slow are both {self.fast!r}: a series cannot cross itself")
        return self

    def lines(self, values: Mapping[str, float]) -> tuple[float, float] | None:
        fast, slow = values.get(self.fast), values.get(self.slow)
        return None if fast is None or slow is None else (fast, slow)

    def template_fields(
        self, now: tuple[float, float], before: tuple[float, float]
    ) -> dict[str, float]:
        return {
            "fast": now[0],
            "slow": now[1],
            "fast_prev": before[0],
            "slow_prev": before[1],
            "gap": now[0] - now[1],
        }


class ThresholdCrossRule(_Rule):
    """Series `series` crosses the constant `level`; `up` is the series rising through it."""

    PLACEHOLDERS: ClassVar[tuple[str, ...]] = ("value", "value_prev", "level", "close", "strength")

    kind: Literal["threshold_cross"]
    series: str
    level: float = Field(allow_inf_nan=False)

    _series_known = field_validator("series")(_known_series)

    @model_validator(mode="after")
    def _level_reachable(self) -> ThresholdCrossRule:
        low, high = SERIES_RANGES.get(self.series, (-math.inf, math.inf))
        if not low < self.level <= high:
            raise ValueError(
                f"level {self.level:g} can never be crossed: {self.series} takes values in "
                f"[{low:g}, {high:g}], so the level must satisfy {low:g} < level <= {high:g}"
            )
        return self

    def lines(self, values: Mapping[str, float]) -> tuple[float, float] | None:
        value = values.get(self.series)
        return None if value is None else (value, self.level)

    def template_fields(
        self, now: tuple[float, float], before: tuple[float, float]
    ) -> dict[str, float]:
        return {"value": now[0], "value_prev": before[0], "level": self.level}


SignalRule: TypeAlias = CrossoverRule | ThresholdCrossRule

RULE_KINDS: dict[str, type[CrossoverRule] | type[ThresholdCrossRule]] = {
    "crossover": CrossoverRule,
    "threshold_cross": ThresholdCrossRule,
}


def _reasons(exc: ValidationError) -> str:
    """Pydantic's errors as one line: `field: why; field: why`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_rules(text: str, *, source: str = "<string>") -> list[SignalRule]:
    """Rules from the text of a rules file, in file order; `source` names it in errors."""
    document = parse_toml(text, source=source, error=SignalRuleError)
    extra = sorted(set(document) - {"rules"})
    if extra:
        raise SignalRuleError(f"{source}: unknown top-level key(s) {extra}; expected [[rules]]")
    tables = document.get("rules")
    if not isinstance(tables, list):
        raise SignalRuleError(f"{source}: no [[rules]] tables (an array of rule tables)")

    rules: list[SignalRule] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            raise SignalRuleError(f"{source}: rule #{number} is not a table")
        rule_id = table.get("id")
        where = f"{source}: rule #{number}" + (f" {rule_id!r}" if rule_id else "")
        kind = table.get("kind")
        model = RULE_KINDS.get(kind) if isinstance(kind, str) else None
        if model is None:
            raise SignalRuleError(
                f"{where}: unknown kind {kind!r}; known kinds: {', '.join(RULE_KINDS)}"
            )
        try:
            rule = model.model_validate(table)
        except ValidationError as exc:
            raise SignalRuleError(f"{where}: {_reasons(exc)}") from exc
        if rule.id in seen:
            raise SignalRuleError(
                f"{where}: duplicate id {rule.id!r}, first used by rule #{seen[rule.id]}; "
                "ids must be unique because stored signals refer to them"
            )
        seen[rule.id] = number
        rules.append(rule)
    return rules


def load_rules(path: Path | None = None) -> list[SignalRule]:
    """Rules from a TOML file, or the defaults shipped in this package when `path` is None."""
    file = read_rules(path, default=DEFAULT_RULES_RESOURCE, error=SignalRuleError, what="rules")
    return parse_rules(file.text, source=file.source)


class SignalEngine:
    """Evaluates a fixed list of rules on each candle; stateless, so output depends only on
    its inputs (the caller keeps the previous candle's values)."""

    def __init__(self, rules: Sequence[SignalRule]) -> None:
        ids = [rule.id for rule in rules]
        duplicates = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
        if duplicates:
            raise SignalRuleError(f"duplicate rule id(s) {duplicates}: ids must be unique")
        self._rules = tuple(rules)

    @property
    def rules(self) -> tuple[SignalRule, ...]:
        return self._rules

    def evaluate(
        self,
        *,
        close: float,
        values: Mapping[str, float],
        previous: Mapping[str, float] | None,
    ) -> list[FiredSignal]:
        """Signals for one closed candle, in rule order.

        `values` are this candle's warmed-up indicators (`close` is added from the
        argument and wins over any `values["close"]`); `previous` the previous candle's,
        with its close under "close", or None for a series' first candle. A rule needs
        both of its lines on both candles, so nothing fires while they warm up.
        """
        if not math.isfinite(close) or close <= 0:
            raise IndicatorInputError(f"close must be a finite positive price, got {close!r}")
        if previous is None:
            return []
        current = {**values, "close": close}
        atr = current.get("atr_14")
        default_scale = atr if atr is not None and 0 < atr < math.inf else close
        fired = []
        for rule in self._rules:
            signal = rule.fire(current, previous, default_scale)
            if signal is not None:
                fired.append(signal)
        return fired
