"""What one webhook message is: its stable id, its body and its headers (pure).

The body is built from the alert alone, so every attempt of a delivery sends the same
bytes under the same `webhook-id`; only `webhook-timestamp` and the signatures change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from schemas.events import Alert
from sinks.webhooks.signing import signature_header

EVENT_TYPE = "alert.fired"
USER_AGENT = "sigflow-webhooks/1"


def webhook_id(alert_id: str, subscription_id: str) -> str:
    """The `webhook-id` of one alert for one subscription: the same on every retry."""
    digest = hashlib.sha256(f"{subscription_id}\n{alert_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def message_body(alert: Alert) -> bytes:
    """The JSON body: the Standard Webhooks envelope `{type, timestamp, data}`."""
    occurred = datetime.fromtimestamp(alert.ts / 1000, tz=UTC)
    return orjson.dumps(
        {
            "type": EVENT_TYPE,
            "timestamp": occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": alert.model_dump(mode="json"),
        }
    )


def message_headers(
    message_id: str, timestamp: int, body: bytes, signing_secrets: Iterable[str]
) -> dict[str, str]:
    """The HTTP headers of one attempt, signed with every currently valid secret."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(signing_secrets, message_id, timestamp, body),
    }
