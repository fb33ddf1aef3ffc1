"""Volume spikes: a closed candle's ln(volume) as a robust z-score of its series' volumes.

Pure, per (exchange, symbol, interval). Volume is heavy-tailed and multiplicative, so it
is scored in logs (a 5x spike is the same distance at any size) against the rolling
median and MAD of the last `window` candles; only spikes up count. Expected volume is
the rolling median itself (the median of logs is the log of the median).
"""

from __future__ import annotations

import math
from typing import Any

from processors.anomalies.findings import Finding
from processors.anomalies.price_jump import CandleView
from processors.anomalies.rolling import RollingRobust
from processors.anomalies.rules import VolumeSpikeRules


class VolumeSpikeDetector:
    """Scores each closed candle's volume against the series' recent volumes."""

    def __init__(self, rules: VolumeSpikeRules, log_volumes: list[float] | None = None) -> None:
        self.rules = rules
        self.log_volumes = RollingRobust(rules.window, (log_volumes or [])[-rules.window :])

    def update(self, candle: CandleView) -> Finding | None:
        """Fold in one closed candle; the anomaly it is, if any."""
        if candle.volume <= 0 or not math.isfinite(candle.volume):
            return None
        value = math.log(candle.volume)
        finding = None
        scored = (
            self.log_volumes.robust_z_beyond(
                value, self.rules.thresholds.info, self.rules.min_sigma
            )
            if len(self.log_volumes) >= self.rules.min_history
            else None
        )
        if scored is not None:
            z, center, _ = scored
            severity = self.rules.thresholds.severity(z)
            if severity is not None:
                usual = math.exp(center)
                finding = Finding(
                    kind="volume_spike",
                    subject=candle.subject,
                    exchange=candle.exchange,
                    symbol=candle.symbol,
                    interval=candle.interval,
                    ts=candle.open_time,
                    score=z,
                    severity=severity,
                    observed=candle.volume,
                    expected=usual,
                    explanation=(
                        f"{candle.interval} volume of {candle.symbol} on {candle.exchange} was "
                        f"{candle.volume:,.4g}, {candle.volume / usual:.1f}x the usual "
                        f"{usual:,.4g} (median of the last {len(self.log_volumes)} candles): "
                        f"{z:.1f} robust sigmas above it in log terms"
                    ),
                )
        self.log_volumes.push(value)
        return finding

    def to_dict(self) -> dict[str, Any]:
        return {"log_volumes": self.log_volumes.values()}

    @classmethod
    def from_dict(cls, rules: VolumeSpikeRules, data: dict[str, Any]) -> VolumeSpikeDetector:
        return cls(rules, data["log_volumes"])
