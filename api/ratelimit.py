"""Per-key rate limits: a token bucket per API key, in memory, per API process."""

from __future__ import annotations

import math
import time


class RateLimiter:
    """`per_minute` requests per key, refilled continuously, bursts up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)

    def retry_after(self, key: str) -> int | None:
        """None when the request may go ahead, else whole seconds until it may."""
        now = time.monotonic()
        tokens, updated = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.refill_per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.refill_per_second))
