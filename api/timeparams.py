"""Time query parameters: ISO-8601 or epoch milliseconds, always UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from api.errors import ApiError


def parse_time_ms(name: str, value: str) -> int:
    """Epoch ms from `1718000000000` or `2024-06-10T06:13:20Z` (naive means UTC)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            422, "invalid_time", f"{name}: {value!r} is neither epoch milliseconds nor ISO-8601"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)
