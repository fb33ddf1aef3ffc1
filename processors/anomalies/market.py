"""The candle-based market detectors of one (exchange, symbol, interval), together.

`CandleStream` keeps one `SeriesDetectors` per interval in each key's state and calls
`update()` with every closed candle, in candle order, so their state folds exactly like
the indicators' (same input, same findings, however the trades were batched).
"""

from __future__ import annotations

from typing import Any

from processors.anomalies.findings import Finding
from processors.anomalies.price_jump import CandleView, PriceJumpDetector
from processors.anomalies.rules import AnomalyRules
from processors.anomalies.volume_spike import VolumeSpikeDetector


class SeriesDetectors:
    """Price-jump and volume-spike detection for one candle series."""

    def __init__(self, rules: AnomalyRules, state: dict[str, Any] | None = None) -> None:
        if state is None:
            self.price = PriceJumpDetector(rules.price_jump)
            self.volume = VolumeSpikeDetector(rules.volume_spike)
        else:
            self.price = PriceJumpDetector.from_dict(rules.price_jump, state["price_jump"])
            self.volume = VolumeSpikeDetector.from_dict(rules.volume_spike, state["volume_spike"])

    def update(self, candle: CandleView) -> list[Finding]:
        """Findings of one closed candle, price jump first."""
        found = (self.price.update(candle), self.volume.update(candle))
        return [finding for finding in found if finding is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"price_jump": self.price.to_dict(), "volume_spike": self.volume.to_dict()}
