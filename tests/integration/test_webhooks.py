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
from pydantic import SecretStr

from sigflow.kafka import create_producer
from sigflow.settings import Settings, settings_env
from sinks.webhooks.exceptions import SecretsKeyError, UnsafeUrlError
from sinks.webhooks.messages import webhook_id
from sinks.webhooks.secret_box import SecretBox, generate_key
from sinks.webhooks.url_guard import AddressPolicy
from tests.conftest import Roles
from tests.integration.webhook_receiver import (
    Receiver,
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
        btc_jumps = await subscribe(settings, receiver, kinds=["price_jump"], symbols=["BTC-USDT"])
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
            await publish_raw(settings, b'{"alert_id": "broken"}')
            await publish_alerts(settings, alerts)
            await eventually(lambda: len(receiver.processed) >= len(wanted), "the deliveries")
            await asyncio.sleep(0.5)  # room for a delivery that should not happen
    assert set(receiver.processed) == wanted and len(receiver.arrivals) == 7
    [rejected] = await read_topic(settings, "dlq")  # a bad record does not stop the others
    assert rejected["component"] == "webhooks" and "invalid Alert" in rejected["reason"]


async def publish_raw(settings: Settings, value: bytes) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("alerts"), value, key=b"broken")
    finally:
        await producer.stop()


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


async def test_secrets_are_sealed_at_rest_still_sign_and_reseal_under_a_new_key(
    settings: Settings, tmp_path: Path
) -> None:
    from tests.integration.test_cli import run_sigflow

    old_key, new_key = generate_key(), generate_key()
    keyed = settings.model_copy(update={"webhook_secrets_key": SecretStr(old_key)})
    table = f"{settings.clickhouse_database}.webhook_subscriptions"

    async def stored_secret(subscription_id: str) -> str:
        [(secret,)] = await query(
            settings,
            f"SELECT secret FROM {table} FINAL WHERE subscription_id = {{id:String}}",
            id=subscription_id,
        )
        return str(secret)

    async with receiving() as receiver:
        plain = await subscribe(settings, receiver)  # written before a key was set
        sealed = await subscribe(keyed, receiver)
        plain_id = plain.subscription.subscription_id
        sealed_id = sealed.subscription.subscription_id
        assert await stored_secret(plain_id) == plain.secret
        at_rest = await stored_secret(sealed_id)
        assert at_rest.startswith("fernet:") and sealed.secret not in at_rest
        async with subscription_store(settings) as unkeyed:
            with pytest.raises(SecretsKeyError, match="SIGFLOW_WEBHOOK_SECRETS_KEY is not set"):
                await unkeyed.get(sealed_id)
        # The dispatcher opens both to sign: each subscription's delivery verifies.
        async with dispatching(keyed):
            await publish_alerts(keyed, [make_alert(30)])
            await eventually(lambda: len(receiver.arrivals) == 2, "both deliveries")
    assert all(arrival.verified_independently for arrival in receiver.arrivals)

    # Rotation: the new key first, then reseal with the CLI; the old key can go.
    rotated = {**settings_env(keyed), "SIGFLOW_WEBHOOK_SECRETS_KEY": f"{new_key},{old_key}"}
    resealed = await asyncio.to_thread(
        run_sigflow, "webhooks", "reseal-secrets", env=rotated, cwd=tmp_path
    )
    assert resealed.returncode == 0, resealed.stderr
    assert "of 2 subscription(s) again, sealed with the first key" in resealed.stderr
    assert old_key not in resealed.stdout + resealed.stderr
    only_new = SecretBox([new_key])
    assert only_new.open(await stored_secret(plain_id)) == plain.secret
    assert only_new.open(await stored_secret(sealed_id)) == sealed.secret


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


async def test_slow_receiver_does_not_hold_up_the_others(pipeline_settings: Settings) -> None:
    settings = webhook_settings(
        pipeline_settings, webhook_endpoint_concurrency=1, webhook_timeout_seconds=5.0
    )
    await prepare(settings)
    alerts = [make_alert(40 + n) for n in range(6)]
    async with (
        receiving(lambda _id, _n: Reply(200, delay=0.5)) as slow,
        receiving() as fast,
    ):
        await subscribe(settings, slow)
        await subscribe(settings, fast)
        async with dispatching(settings):
            started = time.time()
            await publish_alerts(settings, alerts)
            await eventually(lambda: len(fast.processed) == len(alerts), "the fast receiver")
            fast_done = time.time() - started
            await eventually(lambda: len(slow.processed) == len(alerts), "the slow receiver")
            slow_done = time.time() - started
    # One request at a time to the slow endpoint: it needs >= 6 x 0.5 s; the fast
    # receiver got everything while the slow one was still on its first alerts.
    assert slow_done >= 3.0
    assert fast_done < 1.5, f"fast receiver waited {fast_done:.1f} s behind the slow one"


async def test_exhausted_retries_are_dead_lettered_then_redelivered_by_the_cli(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    from tests.integration.test_cli import run_sigflow

    settings = webhook_settings(pipeline_settings, webhook_max_attempts=2)
    await prepare(settings)
    healthy = False
    async with receiving(lambda _id, _n: Reply(200 if healthy else 503)) as receiver:
        created = await subscribe(settings, receiver)
        alert = make_alert(50)
        message_id = webhook_id(alert.alert_id, created.subscription.subscription_id)
        async with dispatching(settings):
            await publish_alerts(settings, [alert])
            await eventually(lambda: _status_is(settings, message_id, "failed"), "the DLQ")
            [dead] = await read_topic(settings, "webhooks.dlq")
            assert (dead["webhook_id"], dead["attempt"], dead["last_error"]) == (
                message_id,
                2,
                "HTTP 503",
            )
            env = settings_env(settings)
            listed = await asyncio.to_thread(
                run_sigflow, "webhooks", "deliveries", "--status", "failed", env=env, cwd=tmp_path
            )
            assert listed.returncode == 0, listed.stderr
            line = f"{message_id}  {created.subscription.subscription_id}  failed  attempts=2"
            assert f"{line}  http=503  {alert.alert_id}  HTTP 503" in listed.stdout
            healthy = True
            redone = await asyncio.to_thread(
                run_sigflow, "webhooks", "redeliver", env=env, cwd=tmp_path
            )
            assert redone.returncode == 0, redone.stderr
            assert "queued 1 failed deliveries for redelivery" in redone.stderr
            await eventually(lambda: _status_is(settings, message_id, "delivered"), "redelivery")
    assert [a.webhook_id for a in receiver.arrivals] == [message_id] * 3
    assert list(receiver.processed) == [message_id]
    assert await attempts(settings, message_id) == [
        (1, "retrying", 503, "HTTP 503"),
        (2, "failed", 503, "HTTP 503"),
        (3, "delivered", 200, ""),
    ]


async def test_receiver_down_across_a_dispatcher_restart_loses_and_doubles_nothing(
    pipeline_settings: Settings, roles: Roles
) -> None:
    """SIGTERM the `sigflow dispatch` process while retries are pending, restart it."""
    settings = webhook_settings(
        pipeline_settings, webhook_max_attempts=100, webhook_backoff_max_seconds=0.5
    )
    roles.settings = settings
    await prepare(settings)
    alerts = [make_alert(60 + n) for n in range(20)]
    # Once back, the receiver fails the first request of every third id once more.
    flaky = lambda id_, n: Reply(500 if n == 1 and int(id_[-2:], 16) % 3 == 0 else 200)  # noqa: E731
    receiver = Receiver(flaky)  # not listening yet: connections are refused
    created = await subscribe(settings, receiver)
    expected = {webhook_id(a.alert_id, created.subscription.subscription_id) for a in alerts}
    db = settings.clickhouse_database

    async def retrying() -> bool:
        rows = await query(
            settings,
            f"SELECT uniqExact(webhook_id) FROM {db}.webhook_delivery_status "
            "WHERE status = 'retrying'",
        )
        return bool(rows[0][0] == len(alerts))

    roles.start("dispatch")
    await publish_alerts(settings, alerts)
    await eventually(retrying, "retries of every alert", timeout=60)
    [process] = roles.processes
    stopping = time.monotonic()
    process.stop(timeout=15)
    assert time.monotonic() - stopping < 10, "SIGTERM did not stop the dispatcher"
    assert "Traceback" not in process.log_tail(200)
    roles.processes.clear()
    await receiver.start()
    try:
        roles.start("dispatch")
        await eventually(
            lambda: set(receiver.processed) == expected, "every alert after the restart", 60
        )
        await asyncio.sleep(0.5)
    finally:
        roles.stop_all()
        await receiver.stop()
    assert set(receiver.processed) == expected  # nothing missing
    assert all(a.verified_independently for a in receiver.arrivals)
    delivered = await query(
        settings,
        f"SELECT count() FROM {db}.webhook_delivery_status WHERE status = 'delivered'",
    )
    assert delivered == [(len(alerts),)]


async def test_cli_manages_subscriptions(pipeline_settings: Settings, tmp_path: Path) -> None:
    from tests.integration.test_cli import one_line, run_sigflow

    settings = webhook_settings(pipeline_settings)
    env = settings_env(settings)

    def sigflow(*args: str) -> Any:
        result = run_sigflow("webhooks", *args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result

    added = await asyncio.to_thread(
        sigflow,
        "add",
        "http://127.0.0.1:9/hook",
        "--kinds",
        "price_jump,volume_spike",
        "--symbols",
        "BTC-USDT",
        "--min-severity",
        "warning",
    )
    secret = added.stdout.strip()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    sub_id = re.search(r"created webhook subscription (sub_[0-9a-f]{16})", added.stderr)[1]  # type: ignore[index]
    listed = await asyncio.to_thread(sigflow, "list")
    assert listed.stdout == (
        f"{sub_id}  enabled  http://127.0.0.1:9/hook  kinds=price_jump,volume_spike "
        "symbols=BTC-USDT min_severity=warning\n"
    )
    assert secret not in listed.stdout + listed.stderr
    await asyncio.to_thread(sigflow, "disable", sub_id)
    assert "disabled (disabled by hand)" in (await asyncio.to_thread(sigflow, "list")).stdout
    await asyncio.to_thread(sigflow, "enable", sub_id)
    rotated = await asyncio.to_thread(sigflow, "rotate-secret", sub_id, "--grace-seconds", "60")
    new_secret = rotated.stdout.strip()
    assert new_secret.startswith("whsec_") and new_secret != secret
    async with subscription_store(settings) as store:
        current = await store.get(sub_id)
    assert current.enabled
    assert current.signing_secrets(current.updated_at) == [new_secret, secret]

    strict = {**env, "SIGFLOW_WEBHOOK_ALLOW_PRIVATE": "false"}
    refused = await asyncio.to_thread(
        run_sigflow, "webhooks", "add", "http://10.0.0.7/hook", env=strict, cwd=tmp_path
    )
    assert refused.returncode == 1
    assert "10.0.0.7 is a private address" in one_line(refused.stderr)
    bad = await asyncio.to_thread(
        run_sigflow,
        "webhooks",
        "add",
        "http://127.0.0.1:9/",
        "--min-severity",
        "loud",
        env=env,
        cwd=tmp_path,
    )
    assert bad.returncode == 1 and "min severity must be one of" in one_line(bad.stderr)
