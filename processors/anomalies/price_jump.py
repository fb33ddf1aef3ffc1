"""Price jumps: a closed candle's log return as a robust z-score of its series' returns.

Pure, per (exchange, symbol, interval). The baseline is the rolling median and MAD of
the last `window` returns (see `rolling.py`), so the jumps it looks for cannot inflate
it the way they inflate a mean and standard deviation. A return across k missing
windows (no trades in between) is divided by sqrt(k), the random-walk scaling, before
it is scored or stored. The candle is scored against the returns before it, then joins
them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from processors.anomalies.findings import Finding, shown_price, signed_percent
from processors.anomalies.rolling import RollingRobust
from processors.anomalies.rules import PriceJumpRules


@dataclass(frozen=True, slots=True)
class CandleView:
    """What candle detectors read from a closed candle."""

    exchange: str
    symbol: str
    interval: str
    width_ms: int
    open_time: int
    close: float
    volume: float

    @property
    def subject(self) -> str:
        return f"{self.exchange}:{self.symbol}"


class PriceJumpDetector:
    """Scores each closed candle's return against the series' recent returns."""

    def __init__(
        self,
        rules: PriceJumpRules,
        returns: list[float] | None = None,
        last_close: float | None = None,
        last_open_time: int | None = None,
    ) -> None:
        self.rules = rules
        self.returns = RollingRobust(rules.window, (returns or [])[-rules.window :])
        self.last_close = last_close
        self.last_open_time = last_open_time

    def update(self, candle: CandleView) -> Finding | None:
        """Fold in one closed candle; the anomaly it is, if any."""
        previous, previous_time = self.last_close, self.last_open_time
        self.last_close, self.last_open_time = candle.close, candle.open_time
        if previous is None or previous_time is None or candle.open_time <= previous_time:
            return None
        windows = (candle.open_time - previous_time) // candle.width_ms
        log_return = math.log(candle.close / previous)
        scaled = log_return / math.sqrt(windows)
        finding = None
        scored = (
            self.returns.robust_z_beyond(scaled, self.rules.thresholds.info, self.rules.min_sigma)
            if len(self.returns) >= self.rules.min_history
            else None
        )
        if scored is not None:
            z, center, sigma = scored
            score = abs(z)
            severity = self.rules.thresholds.severity(score)
            if severity is not None:
                span = f"{candle.interval}" if windows == 1 else f"{windows} x {candle.interval}"
                finding = Finding(
                    kind="price_jump",
                    subject=candle.subject,
                    exchange=candle.exchange,
                    symbol=candle.symbol,
                    interval=candle.interval,
                    ts=candle.open_time,
                    score=score,
                    severity=severity,
                    observed=log_return,
                    expected=center * math.sqrt(windows),
                    explanation=(
                        f"{candle.symbol} on {candle.exchange} moved "
                        f"{signed_percent(math.expm1(log_return))} in {span} "
                        f"({shown_price(previous)} -> {shown_price(candle.close)}): "
                        f"{score:.1f} robust sigmas from the median return "
                        f"{signed_percent(math.expm1(center))} of the last {len(self.returns)} "
                        f"(robust sigma {sigma * 100:.3f}%)"
                    ),
                )
        self.returns.push(scaled)
        return finding

    def to_dict(self) -> dict[str, Any]:
        return {
            "returns": self.returns.values(),
            "last_close": self.last_close,
            "last_open_time": self.last_open_time,
        }

    @classmethod
    def from_dict(cls, rules: PriceJumpRules, data: dict[str, Any]) -> PriceJumpDetector:
        return cls(rules, data["returns"], data["last_close"], data["last_open_time"])
