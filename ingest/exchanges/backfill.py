"""Fetching missed trades over an exchange's REST API, within its rate limits.

One `RestBackfill` per exchange feed (rate limits are per IP, so all its connections
share one token bucket). A 429 or 418 pauses the whole bucket for the `Retry-After` the
exchange asked for (or a jittered back-off when it gave none); 5xx answers and transport
errors are retried with back-off; any other 4xx is a `BackfillError` at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from typing import Any

import httpx

from ingest.exchanges.base import ExchangeAdapter, RestRequest
from ingest.exchanges.exceptions import BackfillError
from ingest.exchanges.pacing import TokenBucket, full_jitter_delay
from ingest.exchanges.tracking import Gap

log = logging.getLogger(__name__)
THROTTLED = (429, 418)  # 418: Binance's IP ban after ignoring 429s


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RestBackfill:
    """GETs against one exchange's REST API, paced and retried; pages of missed trades."""

    def __init__(
        self,
        adapter: ExchangeAdapter,
        rest_url: str,
        *,
        timeout: float,
        max_attempts: int,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self.adapter = adapter
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.bucket = TokenBucket(adapter.rest_rate_per_second, adapter.rest_burst)
        self._client = httpx.AsyncClient(base_url=rest_url, timeout=timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def get(self, request: RestRequest) -> bytes:
        """The body of a successful answer to `request`, after pacing and retries."""
        problem = "no attempt made"
        for attempt in range(self.max_attempts):
            await self.bucket.take(request.weight)
            try:
                response = await self._client.get(request.path, params=request.params)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(self._backoff(attempt))
                continue
            if response.status_code < 300:
                return response.content
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code in THROTTLED:
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                wait = self._backoff(attempt) if wait is None else wait
                self.bucket.hold(wait)
                log.warning(
                    "exchange REST rate limit hit, pausing",
                    extra={
                        "exchange": self.adapter.id,
                        "status": response.status_code,
                        "pause_seconds": round(wait, 3),
                    },
                )
                continue
            if response.status_code < 500:
                break  # our request is wrong: retrying cannot help
            await asyncio.sleep(self._backoff(attempt))
        raise BackfillError(f"{self.adapter.id} GET {request.path} failed: {problem}")

    async def missing_trades(self, gap: Gap, after_ms: int = 0) -> list[Any]:
        """Trades with ids in the gap, in id order (fewer if the exchange has no more).

        `after_ms` is the time of the last trade published before the gap, the cursor of
        APIs that page by time; it moves to the newest trade of each page.
        """
        adapter = self.adapter
        low, high = gap.first, gap.last
        found: dict[int, Any] = {}
        while low <= high:
            request = adapter.backfill_request(gap.symbol, low, high, after_ms=after_ms)
            if request is None:
                break
            body = await self.get(request)
            trades = adapter.parse_backfill(gap.symbol, body, _now_ms())
            page = {
                sequence: trade
                for trade in trades
                if low <= (sequence := adapter.sequence(trade)) <= high
            }
            newest_ms = max((trade.ts for trade in trades), default=after_ms)
            if not page:
                if trades and newest_ms > after_ms and max(map(adapter.sequence, trades)) < low:
                    after_ms = newest_ms  # a time-paged API still before the gap: read on
                    continue
                break
            found.update(page)
            after_ms = max(after_ms, newest_ms)
            if adapter.backfill_direction == "forward":
                low = max(page) + 1
            else:
                high = min(page) - 1
        return [found[sequence] for sequence in sorted(found)]

    async def recent_trades(self, symbol: str) -> list[Any]:
        """The newest trades the exchange offers for `symbol`, oldest first ([] if none)."""
        request = self.adapter.recent_trades_request(symbol)
        if request is None:
            return []
        trades = self.adapter.parse_backfill(symbol, await self.get(request), _now_ms())
        return sorted(trades, key=lambda trade: trade.ts)

    def _backoff(self, attempt: int) -> float:
        return full_jitter_delay(attempt, self.backoff_initial, self.backoff_max)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
