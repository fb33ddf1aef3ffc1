"""What one webhook message is: its stable id, its body and its headers (pure).

The body is built from the alert alone, so every attempt of a delivery sends the same
bytes under the same `webhook-id`; only `webhook-timestamp` and the signatures change.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from schemas.events import Alert
from sinks.webhooks.signing import signature_header

EVENT_TYPE = "alert.fired"
PING_EVENT_TYPE = "webhook.test"
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
            "timestamp": _iso(occurred),
            "data": alert.model_dump(mode="json"),
        }
    )


def ping_id() -> str:
    """A fresh `webhook-id` for a test ping: pings are never retried, so never reused."""
    return "msg_ping_" + secrets.token_hex(12)


def ping_body(subscription_id: str, now_ms: int) -> bytes:
    """A test ping in the same envelope as alerts, so a receiver can verify its setup."""
    sent = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return orjson.dumps(
        {
            "type": PING_EVENT_TYPE,
            "timestamp": _iso(sent),
            "data": {"subscription_id": subscription_id, "message": "sigflow test ping"},
        }
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
