"""Time query parameters: ISO-8601 or epoch milliseconds, always UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from api.errors import ApiError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)
# What ISO-8601 can say (years 1..9999); a larger integer would wrap around in Int64.
MIN_MS = (datetime.min.replace(tzinfo=UTC) - EPOCH) // MILLISECOND
MAX_MS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // MILLISECOND
EPOCH_MS = re.compile(r"-?[0-9]+")  # ASCII only: str.isdigit() also accepts '²'


def parse_time_ms(name: str, value: str) -> int:
    """Epoch ms from `1718000000000` or `2024-06-10T06:13:20Z` (naive means UTC)."""
    text = value.strip()
    if EPOCH_MS.fullmatch(text):
        if not MIN_MS <= int(text) <= MAX_MS:
            raise ApiError(
                422, "invalid_time", f"{name}: {value!r} epoch ms is outside the years 1..9999"
            )
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            422, "invalid_time", f"{name}: {value!r} is neither epoch milliseconds nor ISO-8601"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    # Exact integer arithmetic: float timestamp() * 1000 is off by 1 ms for some instants.
    return (parsed - EPOCH) // MILLISECOND


FAR_FUTURE_MS = 2**62


def time_range(start: str | None, end: str | None) -> tuple[int, int]:
    """`[start, end)` in epoch ms from optional parameters; 422 unless end > start."""
    start_ms = parse_time_ms("start", start) if start is not None else 0
    end_ms = parse_time_ms("end", end) if end is not None else FAR_FUTURE_MS
    if end_ms <= start_ms:
        raise ApiError(422, "invalid_range", "end must be after start")
    return start_ms, min(end_ms, FAR_FUTURE_MS)
