"""One exchange's feed: its connections, and what happens to every trade they read.

The feed owns what its connections share: the adapter, the REST backfill client (one
rate-limit bucket per IP), and the record of published trades. Every trade passes
`publish()`, which drops duplicates, backfills a sequence gap before the trade that
revealed it (so per-symbol order holds on the topic), and hands the trade to the shared
`EventProducer`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ingest import metrics
from ingest.exchanges.backfill import RestBackfill
from ingest.exchanges.base import ExchangeAdapter
from ingest.exchanges.connection import FeedConnection
from ingest.exchanges.exceptions import ExchangeError
from ingest.exchanges.tracking import Gap, RecentTradeIds, SequenceTracker
from ingest.producer import EventProducer
from sigflow.settings import Settings

log = logging.getLogger(__name__)


def connection_chunks(symbols: Sequence[str], per_connection: int) -> list[list[str]]:
    """Symbols split into as few connections as the exchange's limit allows."""
    return [
        list(symbols[start : start + per_connection])
        for start in range(0, len(symbols), per_connection)
    ]


class ExchangeFeed:
    """All connections to one exchange, publishing its trades exactly once."""

    def __init__(
        self, adapter: ExchangeAdapter, settings: Settings, producer: EventProducer
    ) -> None:
        self.adapter = adapter
        self.source = adapter.id
        self.settings = settings
        self.producer = producer
        urls = settings.exchange_urls.get(adapter.id)
        self.ws_url = (urls.ws if urls else None) or adapter.ws_url
        self.rest_url = (urls.rest if urls else None) or adapter.rest_url
        self.sequences = SequenceTracker()
        self.recent = RecentTradeIds(settings.exchange_dedup_window)
        self.last_ts: dict[str, int] = {}
        self._event_lag = metrics.EVENT_LAG.labels(adapter.id)
        self.backfill = RestBackfill(
            adapter,
            self.rest_url,
            timeout=settings.exchange_rest_timeout_seconds,
            max_attempts=settings.exchange_rest_max_attempts,
            backoff_initial=settings.exchange_backoff_initial_seconds,
            backoff_max=settings.exchange_backoff_max_seconds,
        )
        self.connections = [
            FeedConnection(self, chunk, number)
            for number, chunk in enumerate(
                connection_chunks(adapter.symbols.normalized, adapter.max_symbols_per_connection)
            )
        ]

    async def run(self) -> None:
        """Run every connection until cancelled; the REST client is closed on the way out."""
        try:
            async with asyncio.TaskGroup() as group:
                for connection in self.connections:
                    group.create_task(connection.run(), name=connection.name)
        finally:
            await self.backfill.close()

    async def publish(self, trades: Sequence[Any]) -> None:
        """Publish trades read from the stream: once each, gaps backfilled first."""
        for trade in trades:
            if self.adapter.sequential_trade_ids:
                sequence = self.adapter.sequence(trade)
                if self.sequences.is_duplicate(trade.symbol, sequence):
                    continue
                if (gap := self.sequences.gap_before(trade.symbol, sequence)) is not None:
                    await self._fill_gap(gap)
                self.sequences.advance(trade.symbol, sequence)
            elif not self.recent.add(trade.symbol, trade.trade_id):
                continue
            await self._send(trade)

    async def reject(self, raw: bytes | str, reason: str, kind: str) -> None:
        """A message that cannot be read goes to the dead-letter topic with the reason."""
        data = raw.encode() if isinstance(raw, str) else raw
        log.warning("message rejected", extra={"exchange": self.source, "reason": reason})
        await self.producer.reject(self.source, data, reason, kind=kind)

    async def fill_outage(self, symbols: Sequence[str], started_ms: int, ended_ms: int) -> None:
        """After a reconnect: record the outage; without sequential ids, fill it by time."""
        log.warning(
            "connection outage",
            extra={
                "exchange": self.source,
                "symbols": list(symbols),
                "outage_start_ms": started_ms,
                "outage_end_ms": ended_ms,
                "outage_seconds": round((ended_ms - started_ms) / 1000, 3),
            },
        )
        if self.adapter.sequential_trade_ids:
            return  # the first trade per symbol reveals any id gap, backfilled exactly
        metrics.GAPS.labels(self.source, "outage").inc()
        for symbol in symbols:
            await self._fill_by_time(symbol, self.last_ts.get(symbol, started_ms))

    async def _fill_by_time(self, symbol: str, since_ms: int) -> None:
        try:
            trades = await self.backfill.recent_trades(symbol)
        except ExchangeError as exc:
            log.error(
                "outage not backfilled",
                extra={"exchange": self.source, "symbol": symbol, "error": str(exc)},
            )
            return
        fresh = [t for t in trades if t.ts >= since_ms and self.recent.add(t.symbol, t.trade_id)]
        for trade in fresh:
            await self._send(trade)
        metrics.BACKFILLED.labels(self.source).inc(len(fresh))
        covered = bool(trades) and trades[0].ts <= since_ms
        log.log(
            logging.INFO if covered else logging.WARNING,
            "outage backfilled" if covered else "outage only partly backfilled",
            extra={
                "exchange": self.source,
                "symbol": symbol,
                "since_ms": since_ms,
                "backfilled": len(fresh),
                "uncovered_until_ms": None if covered or not trades else trades[0].ts,
            },
        )

    async def _fill_gap(self, gap: Gap) -> None:
        metrics.GAPS.labels(self.source, "sequence").inc()
        wanted = gap
        limit = self.settings.exchange_backfill_max_trades
        if gap.size > limit:
            wanted = Gap(gap.symbol, gap.last - limit + 1, gap.last)
            log.error(
                "trade id gap too long to backfill whole",
                extra={
                    "exchange": self.source,
                    "symbol": gap.symbol,
                    "lost_first_id": gap.first,
                    "lost_last_id": wanted.first - 1,
                },
            )
        try:
            after_ms = self.last_ts.get(gap.symbol, 0)
            trades = await self.backfill.missing_trades(wanted, after_ms) if wanted.size > 0 else []
        except ExchangeError as exc:
            trades = []
            log.error(
                "gap backfill failed",
                extra={"exchange": self.source, "symbol": gap.symbol, "error": str(exc)},
            )
        for trade in trades:
            self.sequences.advance(trade.symbol, self.adapter.sequence(trade))
            await self._send(trade)
        metrics.BACKFILLED.labels(self.source).inc(len(trades))
        log.log(
            logging.WARNING if len(trades) == gap.size else logging.ERROR,
            "trade id gap backfilled",
            extra={
                "exchange": self.source,
                "symbol": gap.symbol,
                "first_id": gap.first,
                "last_id": gap.last,
                "missing": gap.size,
                "backfilled": len(trades),
            },
        )

    async def _send(self, trade: Any) -> None:
        await self.producer.send_trade(trade, self.source)
        self._event_lag.observe(max(0, trade.received_ts - trade.ts) / 1000)
        if trade.ts > self.last_ts.get(trade.symbol, -1):
            self.last_ts[trade.symbol] = trade.ts
