"""What to do after an attempt, and how long to wait before the next one (pure).

Retried: timeouts, connection errors, 429 and 5xx, with exponential back-off and equal
jitter (half fixed, half random, so a fleet of failed deliveries does not come back in
one wave); a `Retry-After` from the receiver is honoured when it asks for longer.
`410 Gone` disables the subscription. Any other answer, or a refused address, fails the
delivery at once: trying the same request again would get the same answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

Decision = Literal["delivered", "retry", "disable", "fail"]
RETRY_AFTER_CAP_SECONDS = 24 * 3600.0  # a receiver cannot park a delivery for longer


@dataclass(frozen=True)
class AttemptResult:
    """How one HTTP attempt ended: a status code, or an error without one."""

    status_code: int | None
    error: str | None
    latency_seconds: float
    retry_after_seconds: float | None = None
    refused: bool = False  # the URL guard refused the destination

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retriable(self) -> bool:
        if self.status_code is None:
            return not self.refused  # timeouts and connection errors
        return self.status_code == 429 or self.status_code >= 500


def decide(result: AttemptResult, attempt: int, last_attempt: int) -> Decision:
    """The outcome of attempt number `attempt` of a delivery allowed `last_attempt` tries."""
    if result.delivered:
        return "delivered"
    if result.status_code == 410:
        return "disable"
    if result.retriable and attempt < last_attempt:
        return "retry"
    return "fail"


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with equal jitter, capped."""

    base_seconds: float
    max_seconds: float

    def delay(
        self,
        failed_attempt: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after attempt `failed_attempt` (1-based) before the next."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (failed_attempt - 1))
        delay = (rng or random).uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP_SECONDS))
        return delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.fromtimestamp(now, tz=UTC)).total_seconds())
