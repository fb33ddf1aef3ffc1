"""Pacing of retries and REST calls: full-jitter back-off and a token bucket."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable


def full_jitter_delay(
    attempt: int, initial: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry `attempt` (0-based): uniform in [0, min(cap, initial·2^n)].

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads many
    clients reconnecting after the same outage instead of having them retry in step.
    """
    ceiling = min(cap, initial * (2 ** min(attempt, 32)))
    return rand() * ceiling


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved; `take()` waits for enough tokens.

    `hold(seconds)` stops everyone for a while (a 429 with Retry-After applies to the
    whole IP, not only to the request that got it).
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._held_until = 0.0
        self._lock = asyncio.Lock()

    def wait_time(self, tokens: float = 1.0) -> float:
        """Seconds until `tokens` may be taken (0 when they may be taken now)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        held = max(0.0, self._held_until - now)
        missing = max(0.0, min(tokens, self.burst) - self._tokens)
        return max(held, missing / self.rate)

    async def take(self, tokens: float = 1.0) -> None:
        """Wait until `tokens` are available, then spend them (first come, first served)."""
        async with self._lock:
            while (delay := self.wait_time(tokens)) > 0:
                await asyncio.sleep(delay)
            self._tokens -= min(tokens, self.burst)

    def hold(self, seconds: float) -> None:
        """Let nobody take tokens for `seconds` from now."""
        self._held_until = max(self._held_until, self._clock() + seconds)
