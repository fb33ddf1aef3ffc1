"""Exchange time stamps to sigflow's epoch milliseconds (pure).

Coinbase and Kraken v2 send RFC 3339 text with up to nanosecond fractions
(`2023-02-09T20:32:50.714964855Z`), which `datetime.fromisoformat` does not take beyond
microseconds; the fraction is cut to milliseconds here instead (truncated, never
rounded up into the next millisecond).
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)


def rfc3339_to_ms(text: str) -> int:
    """Epoch ms of an RFC 3339 time with a zone; anything else is a `ValueError`."""
    match = RFC3339.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 time with a zone: {text!r}")
    date, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    seconds = int(datetime.fromisoformat(f"{date}T{clock}{zone}").timestamp())
    return seconds * 1000 + int((fraction or "0")[:3].ljust(3, "0"))


def seconds_to_ms(value: float | str) -> int:
    """Epoch ms of epoch seconds with a fraction (Kraken REST: `1688669597.8277369`).

    Goes through the decimal text, so `x * 1000` float error cannot drop a millisecond.
    """
    if isinstance(value, bool) or not isinstance(value, float | int | str):
        raise ValueError(f"not epoch seconds: {value!r}")
    try:
        return int(Decimal(str(value)) * 1000)
    except InvalidOperation as exc:
        raise ValueError(f"not epoch seconds: {value!r}") from exc
