"""Webhook delivery end to end: real Kafka, the ClickHouse engine and a local receiver.

Alerts are produced to the `alerts` topic directly (the alert rules are not this
test's subject); the receiver verifies every signature independently.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from sigflow.settings import Settings
from sinks.webhooks.exceptions import UnsafeUrlError
from sinks.webhooks.messages import webhook_id
from sinks.webhooks.url_guard import AddressPolicy
from tests.integration.webhook_receiver import (
    Reply,
    dispatching,
    eventually,
    make_alert,
    prepare,
    publish_alerts,
    query,
    read_topic,
    receiving,
    subscribe,
    subscription_store,
    webhook_settings,
)

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
async def settings(pipeline_settings: Settings) -> Settings:
    prepared = webhook_settings(pipeline_settings)
    await prepare(prepared)
    return prepared


async def attempts(settings: Settings, message_id: str) -> list[tuple[Any, ...]]:
    """(attempt, status, status_code, error) rows of one delivery, from SQL."""
    return await query(
        settings,
        "SELECT attempt, status, status_code, error FROM "
        f"{settings.clickhouse_database}.webhook_deliveries FINAL "
        "WHERE webhook_id = {id:String} ORDER BY attempt",
        id=message_id,
    )


def readme_verifier() -> Any:
    """The receiver example of the README's Webhooks section, executed."""
    section = README.read_text().split("### Webhooks", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert code is not None, "the README's Webhooks section has no Python example"
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)
    return namespace["verify_webhook"]


async def test_alert_is_delivered_signed_and_recorded(settings: Settings) -> None:
    async with receiving() as receiver:
        created = await subscribe(settings, receiver)
        sub_id = created.subscription.subscription_id
        alert = make_alert(1)
        async with dispatching(settings):
            await publish_alerts(settings, [alert])
            await eventually(lambda: len(receiver.processed) == 1, "the delivery")
            message_id = webhook_id(alert.alert_id, sub_id)
            await eventually(
                lambda: _status_is(settings, message_id, "delivered"), "the recorded attempt"
            )
    [arrival] = receiver.arrivals
    assert arrival.webhook_id == message_id
    assert arrival.verified_independently and arrival.verified_by_library
    assert arrival.headers["content-type"] == "application/json"
    assert abs(int(arrival.headers["webhook-timestamp"]) - time.time()) < 30
    assert receiver.processed[message_id] == {
        "type": "alert.fired",
        "timestamp": "2024-06-10T06:14:00.001Z",
        "data": alert.model_dump(mode="json"),
    }
    assert await attempts(settings, message_id) == [(1, "delivered", 200, "")]
    [(latency, subscription, alert_id)] = await query(
        settings,
        "SELECT latency_ms, subscription_id, alert_id "
        f"FROM {settings.clickhouse_database}.webhook_deliveries FINAL",
    )
    assert (subscription, alert_id) == (sub_id, alert.alert_id) and latency > 0
    # The README's receiver example accepts this real delivery and refuses a forgery.
    verify_webhook = readme_verifier()
    assert verify_webhook(created.secret, arrival.headers, arrival.body)["data"] == (
        alert.model_dump(mode="json")
    )
    with pytest.raises(ValueError):
        verify_webhook(created.secret, arrival.headers, arrival.body + b" ")


async def _status_is(settings: Settings, message_id: str, status: str) -> bool:
    rows = await query(
        settings,
        f"SELECT status FROM {settings.clickhouse_database}.webhook_delivery_status "
        "WHERE webhook_id = {id:String}",
        id=message_id,
    )
    return rows == [(status,)]


async def test_500_then_success_retries_under_the_same_webhook_id(settings: Settings) -> None:
    async with receiving(lambda _id, n: Reply(500 if n == 1 else 200)) as receiver:
        created = await subscribe(settings, receiver)
        alert = make_alert(2)
        message_id = webhook_id(alert.alert_id, created.subscription.subscription_id)
        async with dispatching(settings):
            await publish_alerts(settings, [alert])
            await eventually(lambda: _status_is(settings, message_id, "delivered"), "a retry")
    assert [a.webhook_id for a in receiver.arrivals] == [message_id, message_id]
    assert all(a.verified_independently and a.verified_by_library for a in receiver.arrivals)
    assert receiver.arrivals[0].body == receiver.arrivals[1].body
    assert list(receiver.processed) == [message_id] and receiver.processed_twice == []
    assert await attempts(settings, message_id) == [
        (1, "retrying", 500, "HTTP 500"),
        (2, "delivered", 200, ""),
    ]


async def test_timeout_is_retried(settings: Settings) -> None:
    plan = lambda _id, n: Reply(200, delay=1.5 if n == 1 else 0.0)  # noqa: E731
    async with receiving(plan) as receiver:
        created = await subscribe(settings, receiver)
        alert = make_alert(3)
        message_id = webhook_id(alert.alert_id, created.subscription.subscription_id)
        async with dispatching(settings):
            await publish_alerts(settings, [alert])
            await eventually(lambda: _status_is(settings, message_id, "delivered"), "a retry")
    assert await attempts(settings, message_id) == [
        (1, "retrying", None, "timeout after 1 s"),
        (2, "delivered", 200, ""),
    ]


async def test_429_retry_after_is_honoured(settings: Settings) -> None:
    plan = lambda _id, n: Reply(429, headers={"Retry-After": "2"}) if n == 1 else Reply()  # noqa: E731
    async with receiving(plan) as receiver:
        created = await subscribe(settings, receiver)
        alert = make_alert(4)
        message_id = webhook_id(alert.alert_id, created.subscription.subscription_id)
        async with dispatching(settings):
            await publish_alerts(settings, [alert])
            await eventually(lambda: _status_is(settings, message_id, "delivered"), "a retry")
    first, second = receiver.arrivals
    # The back-off alone would be 0.1-0.2 s; the receiver asked for 2 s.
    assert second.at - first.at >= 1.9
    [(next_retry_at, attempted_at)] = await query(
        settings,
        "SELECT next_retry_at, attempted_at FROM "
        f"{settings.clickhouse_database}.webhook_deliveries FINAL WHERE attempt = 1",
    )
    assert (next_retry_at - attempted_at).total_seconds() >= 1.9


async def test_410_gone_disables_the_subscription(settings: Settings) -> None:
    async with receiving(lambda _id, _n: Reply(410)) as receiver:
        created = await subscribe(settings, receiver)
        sub_id = created.subscription.subscription_id
        first, later = make_alert(5), make_alert(6)
        message_id = webhook_id(first.alert_id, sub_id)
        async with dispatching(settings):
            await publish_alerts(settings, [first])
            await eventually(lambda: _status_is(settings, message_id, "failed"), "the 410")
            await publish_alerts(settings, [later])
            await asyncio.sleep(1.0)
    assert [a.webhook_id for a in receiver.arrivals] == [message_id]  # nothing after the 410
    assert await attempts(settings, message_id) == [(1, "failed", 410, "HTTP 410")]
    assert await query(
        settings,
        "SELECT enabled, disabled_reason FROM "
        f"{settings.clickhouse_database}.webhook_subscriptions FINAL",
    ) == [(False, "receiver answered 410 Gone")]
    [dead] = await read_topic(settings, "webhooks.dlq")
    assert (dead["webhook_id"], dead["last_status_code"]) == (message_id, 410)


async def test_filters_choose_which_subscriptions_get_an_alert(settings: Settings) -> None:
    async with receiving() as receiver:
        everything = await subscribe(settings, receiver)
        btc_jumps = await subscribe(
            settings, receiver, kinds=["price_jump"], symbols=["BTC-USDT"]
        )
        critical = await subscribe(settings, receiver, min_severity="critical")
        alerts = [
            make_alert(10),  # price_jump, BTC-USDT, critical
            make_alert(11, kind="volume_spike", severity="warning"),
            make_alert(12, symbol="ETH-USDT", subject="binance:ETH-USDT", severity="info"),
            make_alert(13, kind="volume_spike", symbol="ETH-USDT", subject="binance:ETH-USDT"),
        ]
        wanted = {
            webhook_id(alert.alert_id, created.subscription.subscription_id)
            for created, picks in (
                (everything, alerts),
                (btc_jumps, alerts[:1]),
                (critical, [alerts[0], alerts[3]]),
            )
            for alert in picks
        }
        async with dispatching(settings):
            await publish_alerts(settings, alerts)
            await eventually(lambda: len(receiver.processed) >= len(wanted), "the deliveries")
            await asyncio.sleep(0.5)  # room for a delivery that should not happen
    assert set(receiver.processed) == wanted and len(receiver.arrivals) == 7


async def test_rotation_signs_with_old_and_new_secret(settings: Settings) -> None:
    async with receiving() as receiver:
        created = await subscribe(settings, receiver)
        sub_id = created.subscription.subscription_id
        async with subscription_store(settings) as store:
            new_secret = await store.rotate_secret(sub_id, grace_seconds=3600)
        alert = make_alert(20)
        async with dispatching(settings):
            await publish_alerts(settings, [alert])
            await eventually(lambda: len(receiver.arrivals) == 1, "the delivery")
    [arrival] = receiver.arrivals
    signatures = arrival.headers["webhook-signature"].split()
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for secret in (created.secret, new_secret):
        receiver.secrets[:] = [secret]
        assert await asyncio.to_thread(_verifies, receiver, arrival)


def _verifies(receiver: Any, arrival: Any) -> bool:
    from tests.integration.webhook_receiver import independent_verify, library_verify

    secret = receiver.secrets[0]
    return independent_verify(secret, arrival.headers, arrival.body) and library_verify(
        secret, arrival.headers, arrival.body
    )


async def test_guard_refuses_internal_urls_at_creation_and_at_delivery(
    settings: Settings,
) -> None:
    strict = settings.model_copy(update={"webhook_allow_private": False})
    async with subscription_store(strict) as store:
        for url in (
            "http://127.0.0.1:8080/hook",
            "http://10.0.0.7/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:9000/hook",
        ):
            with pytest.raises(UnsafeUrlError, match="SIGFLOW_WEBHOOK_ALLOW_PRIVATE"):
                await store.create(url)
        assert await store.all() == []
    async with receiving() as receiver:
        # Created while loopback was allowed; the dispatcher runs with the strict policy.
        created = await subscribe(settings, receiver)
        alert = make_alert(30)
        message_id = webhook_id(alert.alert_id, created.subscription.subscription_id)
        async with dispatching(strict):
            await publish_alerts(strict, [alert])
            await eventually(lambda: _status_is(strict, message_id, "failed"), "the refusal")
    assert receiver.arrivals == []
    [(attempt, status, code, error)] = await attempts(settings, message_id)
    assert (attempt, status, code) == (1, "failed", None)
    assert "127.0.0.1 is a loopback address" in error
    assert AddressPolicy.from_settings(strict).allow_private is False
