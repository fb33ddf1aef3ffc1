"""Pure webhook policies: URL guard, retry decisions and back-off, offsets, filters."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import SecretStr

from schemas.events import Alert
from sinks.webhooks.exceptions import UnsafeUrlError
from sinks.webhooks.offsets import OffsetTracker
from sinks.webhooks.retry_policy import AttemptResult, Backoff, decide, parse_retry_after
from sinks.webhooks.subscriptions import Subscription
from sinks.webhooks.url_guard import AddressPolicy, check_url, parse_webhook_url

# ---- URL guard ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("100.64.0.1", "not a public"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_guard_refuses_non_public_addresses_by_default(address: str, kind: str) -> None:
    reason = AddressPolicy().refusal(ipaddress.ip_address(address))
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_guard_allows_public_addresses(address: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_guard_allows_listed_networks_or_everything_when_private_is_allowed() -> None:
    listed = AddressPolicy(allowed_networks=(ipaddress.ip_network("10.1.2.0/24"),))
    assert listed.refusal(ipaddress.ip_address("10.1.2.3")) is None
    assert listed.refusal(ipaddress.ip_address("10.1.3.3")) is not None
    assert AddressPolicy(allow_private=True).refusal(ipaddress.ip_address("127.0.0.1")) is None


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "http:///nohost", "https://u:p@example.com/"],
)
def test_only_plain_http_and_https_urls_are_accepted(url: str) -> None:
    with pytest.raises(UnsafeUrlError):
        parse_webhook_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/",
        "http://localhost/hook",
    ],
)
async def test_check_url_refuses_urls_resolving_to_internal_addresses(url: str) -> None:
    with pytest.raises(UnsafeUrlError, match="SIGFLOW_WEBHOOK_ALLOW_PRIVATE"):
        await check_url(url, AddressPolicy())
    await check_url(url, AddressPolicy(allow_private=True))


# ---- retries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "attempt", "decision"),
    [
        (AttemptResult(200, None, 0.1), 1, "delivered"),
        (AttemptResult(204, None, 0.1), 5, "delivered"),
        (AttemptResult(410, "HTTP 410", 0.1), 1, "disable"),
        (AttemptResult(500, "HTTP 500", 0.1), 1, "retry"),
        (AttemptResult(503, "HTTP 503", 0.1), 2, "retry"),
        (AttemptResult(429, "HTTP 429", 0.1, retry_after_seconds=3), 1, "retry"),
        (AttemptResult(None, "timeout after 1 s", 1.0), 1, "retry"),
        (AttemptResult(None, "ConnectError", 0.0), 1, "retry"),
        (AttemptResult(500, "HTTP 500", 0.1), 3, "fail"),  # last attempt used
        (AttemptResult(400, "HTTP 400", 0.1), 1, "fail"),
        (AttemptResult(301, "HTTP 301", 0.1), 1, "fail"),
        (AttemptResult(None, "resolves to 10.0.0.1", 0.0, refused=True), 1, "fail"),
    ],
)
def test_decide(result: AttemptResult, attempt: int, decision: str) -> None:
    assert decide(result, attempt, last_attempt=3) == decision


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    backoff = Backoff(base_seconds=10, max_seconds=60)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        delays = [backoff.delay(attempt, rng=rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    backoff = Backoff(base_seconds=1, max_seconds=5)
    assert backoff.delay(1, retry_after=30) == 30
    assert 0.5 <= backoff.delay(1, retry_after=0.1) <= 1


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now.timestamp()) == 120
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now.timestamp()) == 90
    assert parse_retry_after("soon", now.timestamp()) is None
    assert parse_retry_after(None, now.timestamp()) is None


# ---- offsets --------------------------------------------------------------------------


def test_commit_stops_at_the_oldest_record_still_in_progress() -> None:
    tracker = OffsetTracker()
    p = ("alerts", 0)
    for offset in (5, 6, 7):
        tracker.start(p, offset)
    tracker.finish(p, 7)
    tracker.finish(p, 6)
    assert tracker.committable() == {p: 5}
    tracker.committed({p: 5})
    assert tracker.committable() == {}
    tracker.finish(p, 5)
    tracker.skip(p, 8)
    assert tracker.committable() == {p: 9}
    assert tracker.in_progress() == 0
    tracker.forget([p])
    assert tracker.committable() == {}


# ---- filters --------------------------------------------------------------------------


def subscription(**fields: object) -> Subscription:
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "subscription_id": "sub_1",
        "url": "https://hooks.example.com/sigflow",
        "secret": SecretStr("whsec_x"),
        "created_at": now,
        "updated_at": now,
    }
    return Subscription.model_validate({**base, **fields})


def alert(**fields: object) -> Alert:
    base: dict[str, object] = {
        "alert_id": "r:1",
        "rule": "r",
        "source": "anomaly",
        "kind": "price_jump",
        "severity": "warning",
        "subject": "binance:BTC-USDT",
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "ts": 1,
        "title": "t",
        "explanation": "e",
    }
    return Alert.model_validate({**base, **fields})


@pytest.mark.parametrize(
    ("filters", "fields", "wanted"),
    [
        ({}, {}, True),
        ({"kinds": ("price_jump",)}, {}, True),
        ({"kinds": ("volume_spike",)}, {}, False),
        ({"symbols": ("BTC-USDT", "ETH-USDT")}, {}, True),
        ({"symbols": ("ETH-USDT",)}, {}, False),
        ({"symbols": ("ETH-USDT",)}, {"symbol": None, "exchange": None}, False),
        ({"min_severity": "warning"}, {}, True),
        ({"min_severity": "critical"}, {}, False),
        ({"min_severity": "info"}, {"severity": "info"}, True),
    ],
)
def test_subscription_filters(
    filters: dict[str, object], fields: dict[str, object], wanted: bool
) -> None:
    assert subscription(**filters).matches(alert(**fields)) is wanted


def test_previous_secret_signs_only_until_the_grace_period_ends() -> None:
    now = datetime.now(UTC)
    rotated = subscription(
        secret=SecretStr("whsec_new"),
        previous_secret=SecretStr("whsec_old"),
        previous_secret_expires_at=now + timedelta(seconds=60),
    )
    assert rotated.signing_secrets(now) == ["whsec_new", "whsec_old"]
    assert rotated.signing_secrets(now + timedelta(seconds=61)) == ["whsec_new"]
    assert subscription(url="http://127.0.0.1/x").endpoint == "127.0.0.1:80"
