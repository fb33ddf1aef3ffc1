"""`/v1/webhooks`: manage alert webhook subscriptions, test-ping them, read deliveries.

The same store, SSRF guard, sender and signing code as the dispatcher and the CLI. A
subscription's secret is returned once, by the `POST` that created it; every later read
leaves it out. Enabling and disabling are `POST …/enable` and `POST …/disable`, actions
like the test ping, rather than a PATCH that could also touch the URL or the secret.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from api.cursor import CURSOR_HEADERS, CursorParam, decode_cursor, set_next_cursor
from api.deps import ClickHouseDep, SettingsDep
from api.errors import ApiError, ErrorPublic
from schemas.api import (
    WebhookCreate,
    WebhookCreatedPublic,
    WebhookDeliveryPublic,
    WebhookPingPublic,
    WebhookPublic,
)
from schemas.events import DeliveryStatus
from sinks.warehouse import database_name
from sinks.webhooks.deliveries import DeliveryLog, DeliveryState
from sinks.webhooks.exceptions import (
    InvalidSubscription,
    SecretsKeyError,
    SubscriptionNotFound,
    UnsafeUrlError,
    WebhookError,
)
from sinks.webhooks.messages import ping_body, ping_id
from sinks.webhooks.sender import WebhookSender
from sinks.webhooks.store import SubscriptionStore
from sinks.webhooks.subscriptions import Subscription
from sinks.webhooks.url_guard import AddressPolicy

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SubscriptionId = Annotated[
    str, Path(min_length=1, max_length=100, description="Its id, e.g. `sub_3f9a…`.")
]
ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorPublic},
    503: {"model": ErrorPublic},
}
ONE_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorPublic}, **ERRORS}


async def get_store(
    request: Request, settings: SettingsDep, clickhouse: ClickHouseDep
) -> SubscriptionStore:
    return SubscriptionStore(
        clickhouse,
        database_name(settings),
        AddressPolicy.from_settings(settings),
        request.app.state.webhook_secrets,
    )


StoreDep = Annotated[SubscriptionStore, Depends(get_store)]


@contextmanager
def webhook_errors() -> Iterator[None]:
    """The webhook package's errors as API errors: unknown id 404, refused input 422, a
    missing or wrong secrets key 503."""
    try:
        yield
    except SubscriptionNotFound as exc:
        raise ApiError(404, "webhook_not_found", str(exc)) from exc
    except UnsafeUrlError as exc:
        raise ApiError(422, "unsafe_url", str(exc)) from exc
    except InvalidSubscription as exc:
        raise ApiError(422, "invalid_subscription", str(exc)) from exc
    except SecretsKeyError as exc:  # the server's key, not the request, is wrong
        raise ApiError(503, "secrets_key", str(exc)) from exc
    except WebhookError as exc:  # e.g. a host name that does not resolve
        raise ApiError(422, "invalid_url", str(exc)) from exc
    except ClickHouseError as exc:
        raise ApiError(503, "warehouse_error", f"query failed: {exc}") from exc


def epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def public(subscription: Subscription) -> WebhookPublic:
    return WebhookPublic(
        subscription_id=subscription.subscription_id,
        url=subscription.url,
        kinds=list(subscription.kinds),
        symbols=list(subscription.symbols),
        min_severity=subscription.min_severity,
        enabled=subscription.enabled,
        disabled_reason=subscription.disabled_reason,
        created_at=epoch_ms(subscription.created_at),
        updated_at=epoch_ms(subscription.updated_at),
    )


def delivery_public(state: DeliveryState) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(
        webhook_id=state.webhook_id,
        subscription_id=state.subscription_id,
        alert_id=state.alert_id,
        attempts=state.attempts,
        status=state.status,
        status_code=state.status_code,
        error=state.error,
        last_attempt_at=epoch_ms(state.last_attempt_at),
        next_retry_at=None if state.next_retry_at is None else epoch_ms(state.next_retry_at),
    )


@router.post("", status_code=201, response_model=WebhookCreatedPublic, responses=ERRORS)
async def create_webhook(store: StoreDep, body: WebhookCreate) -> WebhookCreatedPublic:
    """Subscribe a URL to alerts. The URL must pass the SSRF guard (http(s), public
    addresses only unless the server allows private ones), else 422 saying why.

    The response carries the signing secret (`whsec_…`): the only time it is shown."""
    with webhook_errors():
        created = await store.create(
            body.url, kinds=body.kinds, symbols=body.symbols, min_severity=body.min_severity
        )
    return WebhookCreatedPublic(**public(created.subscription).model_dump(), secret=created.secret)


@router.get("", response_model=list[WebhookPublic], responses=ERRORS)
async def list_webhooks(store: StoreDep) -> list[WebhookPublic]:
    """Every subscription, oldest first (never secrets)."""
    with webhook_errors():
        return [public(subscription) for subscription in await store.all()]


@router.get("/{subscription_id}", response_model=WebhookPublic, responses=ONE_ERRORS)
async def get_webhook(store: StoreDep, subscription_id: SubscriptionId) -> WebhookPublic:
    """One subscription (never its secret)."""
    with webhook_errors():
        return public(await store.get(subscription_id))


@router.post("/{subscription_id}/disable", response_model=WebhookPublic, responses=ONE_ERRORS)
async def disable_webhook(store: StoreDep, subscription_id: SubscriptionId) -> WebhookPublic:
    """Stop delivering to it; alerts and retries for it are dead-lettered meanwhile."""
    with webhook_errors():
        return public(await store.set_enabled(subscription_id, False, "disabled through the API"))


@router.post("/{subscription_id}/enable", response_model=WebhookPublic, responses=ONE_ERRORS)
async def enable_webhook(store: StoreDep, subscription_id: SubscriptionId) -> WebhookPublic:
    """Deliver to it again; its URL passes the SSRF guard again first (422 if not)."""
    with webhook_errors():
        return public(await store.set_enabled(subscription_id, True))


@router.post("/{subscription_id}/test", response_model=WebhookPingPublic, responses=ONE_ERRORS)
async def ping_webhook(
    settings: SettingsDep, store: StoreDep, subscription_id: SubscriptionId
) -> WebhookPingPublic:
    """POST a signed test ping (`type: webhook.test`) to the URL now, enabled or not, and
    report how the receiver answered. Signed and guarded exactly like alert deliveries;
    not recorded in the delivery log. 422 when the SSRF guard refuses the address."""
    with webhook_errors():
        subscription = await store.get(subscription_id)
    message_id = ping_id()
    body = ping_body(subscription_id, int(time.time() * 1000))
    async with WebhookSender(settings, store.policy) as sender:
        result = await sender.post(subscription, message_id, body)
    if result.refused:
        raise ApiError(422, "unsafe_url", result.error or "the URL was refused")
    return WebhookPingPublic(
        webhook_id=message_id,
        delivered=result.delivered,
        status_code=result.status_code,
        error=result.error,
        latency_ms=round(result.latency_seconds * 1000, 3),
    )


@router.get(
    "/{subscription_id}/deliveries",
    response_model=list[WebhookDeliveryPublic],
    responses={200: {"headers": CURSOR_HEADERS}, **ONE_ERRORS},
)
async def list_deliveries(
    settings: SettingsDep,
    store: StoreDep,
    response: Response,
    subscription_id: SubscriptionId,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
    cursor: CursorParam = None,
) -> list[WebhookDeliveryPublic]:
    """Where each delivery to it stands (its latest attempt), newest attempt first.

    A full page sets `X-Next-Cursor`; pass it as `cursor` for the next one."""
    before = decode_cursor(cursor, [int, str]) if cursor is not None else None
    log = DeliveryLog(store.client, database_name(settings))
    with webhook_errors():
        await store.get(subscription_id)  # 404 for an unknown id, not an empty list
        states = await log.states(
            status=status,
            subscription_id=subscription_id,
            limit=limit,
            before=(before[0], before[1]) if before is not None else None,
        )
    deliveries = [delivery_public(state) for state in states]
    if deliveries:
        last = deliveries[-1]
        set_next_cursor(response, len(deliveries), limit, [last.last_attempt_at, last.webhook_id])
    return deliveries
