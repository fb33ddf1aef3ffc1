"""Standard Webhooks signing, checked by a verifier written here and by `standardwebhooks`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from schemas.events import Alert
from sinks.webhooks.exceptions import InvalidSecret
from sinks.webhooks.messages import (
    PING_EVENT_TYPE,
    message_body,
    message_headers,
    ping_body,
    ping_id,
    webhook_id,
)
from sinks.webhooks.signing import SECRET_PREFIX, generate_secret, sign, signature_header

ALERT = Alert(
    alert_id="big-moves:price_jump:binance:BTC-USDT:1718000040000",
    rule="big-moves",
    source="anomaly",
    kind="price_jump",
    severity="critical",
    subject="binance:BTC-USDT",
    exchange="binance",
    symbol="BTC-USDT",
    ts=1_718_000_040_000,
    title="BTC-USDT on binance jumped +3.1% in 1m",
    explanation="1m return +3.1% is 9.3 robust z-scores from the median",
    score=9.3,
)


def independent_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The spec read directly: HMAC-SHA256 over `id.timestamp.body`, any `v1,` matches."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [
        sig.split(",", 1)[1]
        for sig in headers["webhook-signature"].split()
        if sig.startswith("v1,")
    ]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def test_generated_secret_is_whsec_base64_of_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith(SECRET_PREFIX) and first != second
    assert len(base64.b64decode(first.removeprefix(SECRET_PREFIX), validate=True)) == 32


def test_signature_matches_the_spec_example() -> None:
    # The example of the Standard Webhooks specification (spec/standard-webhooks.md).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@given(body=st.binary(max_size=512), timestamp=st.integers(0, 2**33))
def test_any_body_verifies_independently_and_with_the_reference_library(
    body: bytes, timestamp: int
) -> None:
    secret = generate_secret()
    headers = {
        "webhook-id": "msg_x",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header([secret], "msg_x", timestamp, body),
    }
    assert independent_verify(secret, headers, body)
    assert not independent_verify(secret, headers, body + b" ")


def test_headers_of_a_real_message_verify_with_the_standardwebhooks_library() -> None:
    secret = generate_secret()
    body = message_body(ALERT)
    message_id = webhook_id(ALERT.alert_id, "sub_1")
    headers = message_headers(message_id, int(time.time()), body, [secret])
    assert Webhook(secret).verify(body, headers) == {
        "type": "alert.fired",
        "timestamp": "2024-06-10T06:14:00.000Z",
        "data": ALERT.model_dump(mode="json"),
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)
    tampered = {**headers, "webhook-id": "msg_other"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, tampered)


def test_during_rotation_both_secrets_verify_the_same_message() -> None:
    old, new = generate_secret(), generate_secret()
    body = message_body(ALERT)
    headers = message_headers("msg_rot", int(time.time()), body, [new, old])
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        assert independent_verify(secret, headers, body)
        Webhook(secret).verify(body, headers)
    assert not independent_verify(generate_secret(), headers, body)


def test_webhook_id_is_stable_and_distinct_per_subscription() -> None:
    assert webhook_id("a:1", "sub_1") == webhook_id("a:1", "sub_1")
    assert webhook_id("a:1", "sub_1") != webhook_id("a:1", "sub_2")
    assert webhook_id("a:1", "sub_1") != webhook_id("a:2", "sub_1")
    assert message_body(ALERT) == message_body(ALERT.model_copy())


@pytest.mark.parametrize(
    "secret",
    ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_" + "QUJD"],
    ids=["no prefix", "not base64", "too short"],
)
def test_malformed_secrets_are_refused(secret: str) -> None:
    with pytest.raises(InvalidSecret):
        sign(secret, "msg", 1, b"{}")


def test_a_test_ping_is_an_envelope_the_reference_library_verifies() -> None:
    secret = generate_secret()
    message_id, now = ping_id(), int(time.time())
    body = ping_body("sub_0123456789abcdef", now * 1000)
    headers = message_headers(message_id, now, body, [secret])
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == PING_EVENT_TYPE
    assert payload["data"]["subscription_id"] == "sub_0123456789abcdef"
    assert ping_id() != message_id  # never reused: pings are not retried
