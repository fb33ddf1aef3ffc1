"""The life of one WebSocket connection, the same for every exchange.

Open, subscribe (in as many messages as the exchange's per-message limit needs), keep
alive the adapter's way (ping frames, or an application ping every `ping_interval`),
read and hand every message to the adapter, and:

- a connection that receives nothing for `exchange_silence_seconds` (watchdog), that
  the server closes, or that cannot be opened is reopened after a full-jitter
  exponential back-off (reset once a session has received something);
- the first message after a reopen ends the outage window, which the feed records (and
  fills by time where ids are not sequential);
- a malformed message goes to `dlq`, an unknown one is counted and skipped;
- cancelling `run()` closes the socket (close handshake) and returns.

Built on `websockets` (its asyncio implementation): RFC 6455 compliant, ping/pong
keepalive built in, `recv()` safe to cancel (the watchdog's timeout loses no frame).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import websockets
from websockets.asyncio.client import ClientConnection, connect

from ingest import metrics
from ingest.exchanges.base import PingStyle
from ingest.exchanges.exceptions import MalformedMessageError, UnknownSymbolError
from ingest.exchanges.pacing import full_jitter_delay

if TYPE_CHECKING:
    from ingest.exchanges.feed import ExchangeFeed

log = logging.getLogger(__name__)
OPEN_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 2.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a Bybit batch of 1024 trades is ~150 kB


def now_ms() -> int:
    """Wall-clock epoch milliseconds (receive times, outage windows)."""
    return time.time_ns() // 1_000_000


class FeedConnection:
    """One WebSocket carrying trades of `symbols`, reopened until cancelled."""

    def __init__(self, feed: ExchangeFeed, symbols: Sequence[str], number: int) -> None:
        self.feed = feed
        self.adapter = feed.adapter
        self.symbols = list(symbols)
        self.name = f"{feed.source}#{number}"
        self.url = self.adapter.ws_endpoint(feed.ws_url, self.symbols)
        self.sessions = 0  # connections opened so far
        # metric children looked up once: `labels()` per message costs more than parsing
        self._received = metrics.MESSAGES_RECEIVED.labels(feed.source)
        self._unknown = metrics.UNKNOWN_MESSAGES.labels(feed.source)
        self._outage_started_ms: int | None = None

    async def run(self) -> None:
        """Keep a session open until cancelled, reconnecting with back-off."""
        settings = self.feed.settings
        attempt = 0
        while True:
            received = 0
            try:
                received = await self._session()
                reason = "watchdog: silent connection"
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if self._outage_started_ms is None:
                self._outage_started_ms = now_ms()
            attempt = 0 if received else attempt + 1
            delay = full_jitter_delay(
                attempt,
                settings.exchange_backoff_initial_seconds,
                settings.exchange_backoff_max_seconds,
            )
            log.warning(
                "exchange connection lost, reconnecting",
                extra={
                    "connection": self.name,
                    "reason": reason,
                    "retry_in_seconds": round(delay, 3),
                },
            )
            await asyncio.sleep(delay)

    async def _session(self) -> int:
        """One connection: returns the number of messages received when it goes silent.

        Raises when the connection cannot be opened or is closed by the other side.
        """
        frames = self.adapter.ping_style is PingStyle.FRAME
        interval = self.adapter.ping_interval
        async with connect(
            self.url,
            open_timeout=OPEN_TIMEOUT_SECONDS,
            close_timeout=CLOSE_TIMEOUT_SECONDS,
            ping_interval=interval if frames else None,
            ping_timeout=interval if frames else None,
            max_size=MAX_MESSAGE_BYTES,
        ) as websocket:
            if self.sessions:
                metrics.RECONNECTS.labels(self.feed.source).inc()
            self.sessions += 1
            for message in self.adapter.subscribe_messages(self.symbols):
                await websocket.send(message)
            pinger = None if frames else asyncio.create_task(self._ping(websocket))
            try:
                return await self._read(websocket)
            except asyncio.CancelledError:
                await websocket.close()  # shutting down: 1000, not the 1011 of an error exit
                raise
            finally:
                if pinger is not None:
                    pinger.cancel()
                    await asyncio.gather(pinger, return_exceptions=True)

    async def _read(self, websocket: ClientConnection) -> int:
        silence = self.feed.settings.exchange_silence_seconds
        received = 0
        while True:
            try:
                async with asyncio.timeout(silence):
                    raw = await websocket.recv(decode=False)
            except TimeoutError:
                log.warning(
                    "exchange connection silent, restarting it",
                    extra={"connection": self.name, "silent_seconds": silence},
                )
                return received
            received += 1
            await self.handle_message(raw)

    async def handle_message(self, raw: bytes) -> None:
        """One message off the socket: parse, then publish, dead-letter or count it."""
        received_ts = now_ms()
        self._received.inc()
        if self._outage_started_ms is not None:
            started, self._outage_started_ms = self._outage_started_ms, None
            await self.feed.fill_outage(self.symbols, started, received_ts)
        try:
            parsed = self.adapter.parse(raw, received_ts)
        except MalformedMessageError as exc:
            await self.feed.reject(raw, exc.reason, kind="malformed")
            return
        except UnknownSymbolError as exc:
            await self.feed.reject(raw, str(exc), kind="unknown_symbol")
            return
        if parsed.kind == "trades":
            await self.feed.publish(parsed.trades)
        elif parsed.kind == "unknown":
            self._unknown.inc()
            log.debug("unknown message skipped", extra={"connection": self.name})
        elif parsed.kind == "error":
            log.error(
                "exchange refused a request",
                extra={"connection": self.name, "detail": parsed.detail},
            )

    async def _ping(self, websocket: ClientConnection) -> None:
        message = self.adapter.ping_message()
        if message is None:
            return
        while True:
            await asyncio.sleep(self.adapter.ping_interval)
            try:
                await websocket.send(message)
            except websockets.exceptions.ConnectionClosed:
                return  # the reader sees the close and reconnects
