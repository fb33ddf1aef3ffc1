"""Cross-exchange spread and divergence on aligned candle windows, per symbol.

Pure, per (symbol, interval). Candles of every exchange quoting the symbol arrive on one
stream keyed by symbol, each exchange's in its own order but interleaved arbitrarily.
A window is evaluated once every exchange seen so far has moved to it or past it (the
minimum of their progress, as a multi-input watermark), so the interleaving never
changes which closes are compared: a replay evaluates the same windows with the same
exchanges. An exchange without trades in a window is simply absent from it. Windows
wait for at least `min_exchanges` exchanges; an exchange lagging more than
`max_wait_intervals` windows behind the newest is left out of the windows it holds up
(only then can the interleaving matter).

For an evaluated window with closes c_e, median m: each exchange's deviation is
`(c_e - m) / m` in basis points and the window's spread is `(max - min) / m`; these are
the `SpreadPoint`s. Divergence scores an exchange's deviation as a robust z-score against
its own last `window` deviations (a steady premium is not an anomaly) and needs it to
differ from that usual deviation by `min_bps` too.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from processors.anomalies.findings import Finding, shown_price
from processors.anomalies.rolling import RollingRobust
from processors.anomalies.rules import DivergenceRules

BPS = 10_000.0


@dataclass(frozen=True, slots=True)
class SpreadPoint:
    """One exchange's place in one aligned window."""

    exchange: str
    open_time: int
    deviation_bps: float  # this exchange's close vs the cross-exchange median
    spread_bps: float  # max - min close of the window vs the median
    exchanges: int


class CrossExchangeAligner:
    """Aligned windows of one (symbol, interval) across exchanges."""

    def __init__(
        self,
        rules: DivergenceRules,
        symbol: str,
        interval: str,
        width_ms: int,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.rules, self.symbol, self.interval, self.width_ms = rules, symbol, interval, width_ms
        state = state or {}
        self.progress: dict[str, int] = dict(state.get("progress", {}))
        self.windows: dict[int, dict[str, float]] = {
            int(start): dict(closes) for start, closes in state.get("windows", {}).items()
        }
        self.evaluated: int | None = state.get("evaluated")
        self.deviations = {
            exchange: RollingRobust(rules.window, values[-rules.window :])
            for exchange, values in state.get("deviations", {}).items()
        }

    def add(
        self, exchange: str, open_time: int, close: float
    ) -> tuple[list[SpreadPoint], list[Finding], bool]:
        """Fold in one closed candle; the spreads and divergences of windows it completed,
        and whether it arrived too late (its window was already evaluated without it)."""
        # Progress first: a newly seen exchange whose first window came too late still
        # holds up the next ones, so it joins from there on.
        self.progress[exchange] = max(open_time, self.progress.get(exchange, open_time))
        if self.evaluated is not None and open_time <= self.evaluated:
            return [], [], True
        self.windows.setdefault(open_time, {})[exchange] = close
        spreads: list[SpreadPoint] = []
        findings: list[Finding] = []
        for start in self._ready():
            self._evaluate(start, self.windows.pop(start), spreads, findings)
            self.evaluated = start
        return spreads, findings, False

    def _ready(self) -> list[int]:
        """Windows every exchange has moved to or past, oldest first."""
        newest = max(self.progress.values())
        patience = self.rules.max_wait_intervals * self.width_ms
        if len(self.progress) < self.rules.min_exchanges:
            bound = newest - patience - 1  # alone: only give up on windows nobody can fill
        else:
            bound = min(seen for seen in self.progress.values() if newest - seen <= patience)
        return sorted(start for start in self.windows if start <= bound)

    def _evaluate(
        self,
        start: int,
        closes: dict[str, float],
        spreads: list[SpreadPoint],
        findings: list[Finding],
    ) -> None:
        if len(closes) < self.rules.min_exchanges:
            return
        center = statistics.median(closes.values())
        spread = (max(closes.values()) - min(closes.values())) / center * BPS
        for exchange in sorted(closes):
            deviation = (closes[exchange] - center) / center * BPS
            spreads.append(SpreadPoint(exchange, start, deviation, spread, len(closes)))
            history = self.deviations.get(exchange)
            if history is None:
                history = self.deviations[exchange] = RollingRobust(self.rules.window)
            if len(history) >= self.rules.min_history:
                finding = self._score(exchange, start, closes, center, deviation, history)
                if finding is not None:
                    findings.append(finding)
            history.push(deviation)

    def _score(
        self,
        exchange: str,
        start: int,
        closes: dict[str, float],
        center: float,
        deviation: float,
        history: RollingRobust,
    ) -> Finding | None:
        scored = history.robust_z_beyond(
            deviation, self.rules.thresholds.info, self.rules.min_sigma_bps
        )
        if scored is None:
            return None
        z, usual, _ = scored
        score = abs(z)
        severity = self.rules.thresholds.severity(score)
        if severity is None or abs(deviation - usual) < self.rules.min_bps:
            return None
        others = ", ".join(
            f"{name} {shown_price(price)}"
            for name, price in sorted(closes.items())
            if name != exchange
        )
        return Finding(
            kind="divergence",
            subject=f"{exchange}:{self.symbol}",
            exchange=exchange,
            symbol=self.symbol,
            interval=self.interval,
            ts=start,
            score=score,
            severity=severity,
            observed=deviation,
            expected=usual,
            explanation=(
                f"{self.symbol} on {exchange} closed the {self.interval} window at "
                f"{shown_price(closes[exchange])}, {deviation:+.1f} bps from the median "
                f"{shown_price(center)} of {len(closes)} exchanges ({others}); its usual "
                f"deviation is {usual:+.1f} bps, so this is {score:.1f} robust sigmas off"
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "progress": self.progress,
            "windows": {str(start): closes for start, closes in self.windows.items()},
            "evaluated": self.evaluated,
            "deviations": {name: window.values() for name, window in self.deviations.items()},
        }
