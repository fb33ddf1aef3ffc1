"""The last trade per exchange and symbol, and the cross-exchange price derived from it.

Pure and in memory: the topic feed (or a cold-start warehouse query) calls `update`,
the prices route calls `latest` (shaped as `schemas.api.SymbolPricePublic`). A trade
only replaces an older one, so the feed and the warehouse may fill the book in any order.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["stream", "warehouse"]


@dataclass(frozen=True, slots=True)
class LastTrade:
    """What the book keeps of a trade."""

    exchange: str
    symbol: str
    price: float
    size: float
    side: Literal["buy", "sell"]
    ts: int
    source: Source = "stream"


class PriceBook:
    """Last trade per (exchange, symbol); exchanges lagging the newest by more than
    `max_skew_ms` of event time are left out of the cross-exchange price."""

    def __init__(self, max_skew_ms: int) -> None:
        self.max_skew_ms = max_skew_ms
        self._last: dict[str, dict[str, LastTrade]] = {}  # symbol -> exchange -> trade
        self.version = 0  # bumped on every change, so a reader can cache its answer

    def update(self, trade: LastTrade) -> bool:
        """Keep `trade` if it is the newest of its exchange and symbol; True if kept."""
        by_exchange = self._last.setdefault(trade.symbol, {})
        current = by_exchange.get(trade.exchange)
        if current is not None and current.ts > trade.ts:
            return False
        by_exchange[trade.exchange] = trade
        self.version += 1
        return True

    def __len__(self) -> int:
        return sum(len(by_exchange) for by_exchange in self._last.values())

    def trades(self) -> Iterable[LastTrade]:
        """Every kept trade."""
        for by_exchange in self._last.values():
            yield from by_exchange.values()

    def latest(
        self, now_ms: int, symbols: set[str] | None = None, exchange: str | None = None
    ) -> list[dict[str, Any]]:
        """Prices by symbol (all, or `symbols`), optionally of one exchange only, shaped
        as `SymbolPricePublic`. Plain dicts: this is the hot path of the API, and building
        models per request costs more than the rest of the request."""
        result = []
        for symbol in sorted(self._last if symbols is None else symbols & self._last.keys()):
            trades = [
                trade
                for name, trade in sorted(self._last[symbol].items())
                if exchange is None or name == exchange
            ]
            if trades:
                result.append(self._aggregate(symbol, trades, now_ms))
        return result

    def _aggregate(self, symbol: str, trades: list[LastTrade], now_ms: int) -> dict[str, Any]:
        newest = max(trade.ts for trade in trades)
        exchanges: list[dict[str, Any]] = [
            {
                "exchange": trade.exchange,
                "price": trade.price,
                "size": trade.size,
                "side": trade.side,
                "ts": trade.ts,
                "age_ms": now_ms - trade.ts,
                "behind_ms": newest - trade.ts,
                "included": newest - trade.ts <= self.max_skew_ms,
                "source": trade.source,
            }
            for trade in trades
        ]
        prices = [t.price for t in trades if newest - t.ts <= self.max_skew_ms]
        median = statistics.median(prices)
        low, high = min(prices), max(prices)
        return {
            "symbol": symbol,
            "price": median,
            "low": low,
            "high": high,
            "spread_bps": (high - low) / median * 10_000,
            "ts": newest,
            "age_ms": now_ms - newest,
            "exchanges": exchanges,
        }
