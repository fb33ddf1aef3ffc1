"""`/v1/webhooks` against the real ClickHouse engine and a real local HTTP receiver.

The receiver (tests/integration/webhook_receiver.py) verifies every ping with its own
Standard Webhooks verifier and with the reference library. The API under test allows
loopback (`webhook_allow_private`) where a ping must reach the receiver; a second app
with the default policy shows the SSRF guard refusing the same URLs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from schemas.events import PendingDelivery
from sigflow.roles import migrate
from sigflow.settings import Settings
from sinks.warehouse import connect, database_name
from sinks.webhooks.deliveries import DeliveryLog
from sinks.webhooks.messages import webhook_id
from sinks.webhooks.secret_box import generate_key
from tests.integration.test_api import assert_error, new_api_key, serve, settings_for
from tests.integration.webhook_receiver import Reply, make_alert, receiving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def settings(kafka_bootstrap: str, clickhouse_url: str) -> Settings:
    """Loopback allowed (the receiver runs on 127.0.0.1), short webhook timeout."""
    base = settings_for(kafka_bootstrap, clickhouse_url, f"apiwh{uuid.uuid4().hex[:8]}")
    await migrate(base)
    return base.model_copy(update={"webhook_allow_private": True, "webhook_timeout_seconds": 2.0})


@pytest.fixture(scope="module")
async def api_key(settings: Settings) -> str:
    return await new_api_key(settings)


@pytest.fixture(scope="module")
async def api(settings: Settings, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings, api_key) as http:
        yield http


@pytest.fixture(scope="module")
async def guarded(settings: Settings, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """The same database under the default SSRF policy: no private addresses."""
    strict = settings.model_copy(update={"webhook_allow_private": False})
    async with serve(strict, api_key) as http:
        yield http


async def create(api: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# ---- create, read, secret shown once -------------------------------------------------


async def test_create_returns_the_secret_once_and_reads_never_show_it(
    api: httpx.AsyncClient,
) -> None:
    created = await create(
        api,
        "http://127.0.0.1:9/hooks",
        kinds=["price_jump", "whale_transfer"],
        symbols=["BTC-USDT"],
        min_severity="warning",
    )
    secret = created.pop("secret")
    assert secret.startswith("whsec_") and len(secret) > 40
    assert created["subscription_id"].startswith("sub_")
    assert created["kinds"] == ["price_jump", "whale_transfer"]
    assert (created["symbols"], created["min_severity"]) == (["BTC-USDT"], "warning")
    assert (created["enabled"], created["disabled_reason"]) == (True, "")
    one = await api.get(f"/v1/webhooks/{created['subscription_id']}")
    listed = await api.get("/v1/webhooks")
    assert one.status_code == listed.status_code == 200
    assert one.json() == created
    assert created in listed.json()
    for response in (one, listed):
        assert secret not in response.text and "secret" not in response.text


async def test_a_second_create_gets_a_different_id_and_secret(api: httpx.AsyncClient) -> None:
    first = await create(api, "http://127.0.0.1:9/a")
    second = await create(api, "http://127.0.0.1:9/a")
    assert first["subscription_id"] != second["subscription_id"]
    assert first["secret"] != second["secret"]


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("http://127.0.0.1:8080/hook", ["127.0.0.1", "loopback", "SIGFLOW_WEBHOOK_ALLOW_PRIVATE"]),
        ("http://169.254.169.254/latest/meta-data", ["link-local"]),
        ("http://10.0.0.5/hook", ["private"]),
        ("http://[::1]/hook", ["loopback"]),
        ("http://localhost:8000/hook", ["localhost", "loopback"]),
        ("ftp://example.com/hook", ["http or https"]),
        ("http://user:pw@example.com/hook", ["credentials"]),
    ],
    ids=["loopback", "metadata", "private", "ipv6-loopback", "localhost", "scheme", "userinfo"],
)
async def test_the_ssrf_guard_refuses_internal_urls_with_a_clear_422(
    guarded: httpx.AsyncClient, url: str, parts: list[str]
) -> None:
    response = await guarded.post("/v1/webhooks", json={"url": url})
    assert_error(response, 422, "unsafe_url", *parts)


async def test_a_host_that_does_not_resolve_is_a_422(guarded: httpx.AsyncClient) -> None:
    response = await guarded.post("/v1/webhooks", json={"url": "http://no-such-host.invalid/"})
    assert_error(response, 422, "invalid_url", "cannot resolve", "no-such-host.invalid")


@pytest.mark.parametrize(
    ("body", "code", "parts"),
    [
        ({}, "invalid_request", ["body.url", "required"]),
        ({"url": "http://127.0.0.1:9/", "symbols": ["btc"]}, "invalid_request", ["symbols"]),
        ({"url": "http://127.0.0.1:9/", "min_severity": "loud"}, "invalid_request", ["severity"]),
        ({"url": "http://127.0.0.1:9/", "kinds": [""]}, "invalid_request", ["kinds"]),
        ({"url": "http://127.0.0.1:9/", "secret": "whsec_mine"}, "invalid_request", ["secret"]),
    ],
    ids=["no-url", "bad-symbol", "bad-severity", "empty-kind", "own-secret"],
)
async def test_a_bad_create_body_is_a_422_in_the_error_shape(
    api: httpx.AsyncClient, body: dict[str, Any], code: str, parts: list[str]
) -> None:
    assert_error(await api.post("/v1/webhooks", json=body), 422, code, *parts)


# ---- disable and enable ---------------------------------------------------------------


async def test_disable_then_enable_is_stored_and_shown(api: httpx.AsyncClient) -> None:
    sub = (await create(api, "http://127.0.0.1:9/toggle"))["subscription_id"]
    disabled = await api.post(f"/v1/webhooks/{sub}/disable")
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "disabled through the API"
    assert (await api.get(f"/v1/webhooks/{sub}")).json()["enabled"] is False
    enabled = await api.post(f"/v1/webhooks/{sub}/enable")
    assert (enabled.status_code, enabled.json()["enabled"]) == (200, True)
    assert (await api.get(f"/v1/webhooks/{sub}")).json()["disabled_reason"] == ""


async def test_enable_checks_the_url_against_the_guard_again(
    api: httpx.AsyncClient, guarded: httpx.AsyncClient
) -> None:
    sub = (await create(api, "http://127.0.0.1:9/recheck"))["subscription_id"]
    assert (await api.post(f"/v1/webhooks/{sub}/disable")).status_code == 200
    assert_error(await guarded.post(f"/v1/webhooks/{sub}/enable"), 422, "unsafe_url", "loopback")
    assert (await api.get(f"/v1/webhooks/{sub}")).json()["enabled"] is False


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("POST", "/disable"),
        ("POST", "/enable"),
        ("POST", "/test"),
        ("GET", "/deliveries"),
    ],
)
async def test_an_unknown_id_is_a_404_in_the_error_shape(
    api: httpx.AsyncClient, method: str, suffix: str
) -> None:
    response = await api.request(method, f"/v1/webhooks/sub_nope{suffix}")
    assert_error(response, 404, "webhook_not_found", "sub_nope")


# ---- test ping ------------------------------------------------------------------------


async def test_a_test_ping_arrives_signed_and_its_status_comes_back(
    api: httpx.AsyncClient,
) -> None:
    async with receiving() as receiver:
        created = await create(api, receiver.url())
        receiver.secrets.append(created["secret"])
        response = await api.post(f"/v1/webhooks/{created['subscription_id']}/test")
    assert response.status_code == 200, response.text
    ping = response.json()
    assert (ping["delivered"], ping["status_code"], ping["error"]) == (True, 200, None)
    assert ping["latency_ms"] >= 0
    [arrival] = receiver.arrivals
    assert arrival.webhook_id == ping["webhook_id"]
    assert arrival.verified_independently and arrival.verified_by_library
    body = orjson.loads(arrival.body)
    assert body["type"] == "webhook.test"
    assert body["data"]["subscription_id"] == created["subscription_id"]


async def test_a_test_ping_reports_a_failing_receiver(api: httpx.AsyncClient) -> None:
    async with receiving(lambda _id, _n: Reply(status=503)) as receiver:
        created = await create(api, receiver.url())
        response = await api.post(f"/v1/webhooks/{created['subscription_id']}/test")
    assert response.status_code == 200
    ping = response.json()
    assert (ping["delivered"], ping["status_code"], ping["error"]) == (False, 503, "HTTP 503")
    assert len(receiver.arrivals) == 1


async def test_a_test_ping_to_a_closed_port_reports_the_connection_error(
    api: httpx.AsyncClient,
) -> None:
    async with receiving() as receiver:
        url = receiver.url()
    created = await create(api, url)  # the receiver is gone: nothing listens there
    ping = (await api.post(f"/v1/webhooks/{created['subscription_id']}/test")).json()
    assert (ping["delivered"], ping["status_code"]) == (False, None)
    assert "ConnectError" in ping["error"]


async def test_a_test_ping_goes_through_the_ssrf_guard(
    api: httpx.AsyncClient, guarded: httpx.AsyncClient
) -> None:
    async with receiving() as receiver:
        created = await create(api, receiver.url())
        response = await guarded.post(f"/v1/webhooks/{created['subscription_id']}/test")
    assert_error(response, 422, "unsafe_url", "loopback")
    assert receiver.arrivals == []


# ---- delivery log ---------------------------------------------------------------------


async def record_deliveries(settings: Settings, subscription_id: str, count: int) -> list[str]:
    """`count` deliveries through the dispatcher's own log writer; the last one twice
    (a failed first attempt, then a delivered second). Their webhook ids, oldest first."""
    client = await connect(settings)
    log = DeliveryLog(client, database_name(settings))
    ids: list[str] = []
    try:
        for n in range(count):
            alert = make_alert(n)
            delivery = PendingDelivery(
                webhook_id=webhook_id(alert.alert_id, subscription_id),
                subscription_id=subscription_id,
                alert=alert,
                attempt=1,
                last_attempt=5,
                due_at=alert.ts,
            )
            last = n == count - 1
            await log.record(
                delivery, "retrying" if last else "delivered", status_code=500 if last else 200
            )
            if last:
                second = delivery.model_copy(update={"attempt": 2})
                await log.record(second, "delivered", status_code=200)
            ids.append(delivery.webhook_id)
    finally:
        await client.close()
    return ids


async def test_deliveries_are_paged_newest_first_without_gaps(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    sub = (await create(api, "http://127.0.0.1:9/log"))["subscription_id"]
    other = (await create(api, "http://127.0.0.1:9/other"))["subscription_id"]
    ids = await record_deliveries(settings, sub, 7)
    await record_deliveries(settings, other, 2)
    everything = (await api.get(f"/v1/webhooks/{sub}/deliveries")).json()
    assert [d["webhook_id"] for d in everything] == ids[::-1]
    newest = everything[0]
    assert (newest["attempts"], newest["status"], newest["status_code"]) == (2, "delivered", 200)
    assert {d["subscription_id"] for d in everything} == {sub}
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = await api.get(f"/v1/webhooks/{sub}/deliveries", params=params)
        assert page.status_code == 200, page.text
        seen += [d["webhook_id"] for d in page.json()]
        cursor = page.headers.get("X-Next-Cursor")
        if cursor is None:
            break
    assert seen == ids[::-1]


async def test_deliveries_filter_by_status(api: httpx.AsyncClient, settings: Settings) -> None:
    sub = (await create(api, "http://127.0.0.1:9/status"))["subscription_id"]
    await record_deliveries(settings, sub, 1)
    delivered = await api.get(f"/v1/webhooks/{sub}/deliveries", params={"status": "delivered"})
    failed = await api.get(f"/v1/webhooks/{sub}/deliveries", params={"status": "failed"})
    assert len(delivered.json()) == 1 and failed.json() == []
    bad = await api.get(f"/v1/webhooks/{sub}/deliveries", params={"status": "lost"})
    assert_error(bad, 422, "invalid_request", "query.status")


# ---- auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks/sub_x"),
        ("POST", "/v1/webhooks/sub_x/test"),
        ("GET", "/v1/webhooks/sub_x/deliveries"),
    ],
)
async def test_webhook_routes_need_an_api_key(settings: Settings, method: str, path: str) -> None:
    async with serve(settings) as anonymous:
        response = await anonymous.request(method, path, json={"url": "http://127.0.0.1:9/"})
    assert_error(response, 401, "missing_api_key")


async def test_public_read_does_not_open_webhook_management(settings: Settings) -> None:
    public = settings.model_copy(update={"api_public_read": True})
    async with serve(public) as anonymous:
        response = await anonymous.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/"})
    assert_error(response, 401, "missing_api_key")


# ---- secrets sealed at rest ------------------------------------------------------------


async def test_sealed_secrets_need_the_servers_key_and_its_absence_is_a_503(
    kafka_bootstrap: str, clickhouse_url: str
) -> None:
    base = settings_for(kafka_bootstrap, clickhouse_url, f"apiseal{uuid.uuid4().hex[:8]}")
    await migrate(base)
    key = await new_api_key(base)
    keyed = base.model_copy(
        update={"webhook_allow_private": True, "webhook_secrets_key": SecretStr(generate_key())}
    )
    async with serve(keyed, key) as http:
        created = await create(http, "http://127.0.0.1:9/hook")
        listed = await http.get("/v1/webhooks")
    assert listed.status_code == 200 and created["secret"] not in listed.text
    client = await connect(base)
    try:
        stored = await client.query(
            f"SELECT secret FROM {database_name(base)}.webhook_subscriptions FINAL"
        )
    finally:
        await client.close()
    assert stored.result_rows[0][0].startswith("fernet:")
    async with serve(base, key) as http:  # the same table, a server without the key
        refused = await http.get("/v1/webhooks")
    assert_error(refused, 503, "secrets_key", "SIGFLOW_WEBHOOK_SECRETS_KEY is not set")
