"""Webhook subscriptions stored in the warehouse (`webhook_subscriptions`).

Used by the CLI, the dispatcher and the HTTP API alike. Every change writes the whole
row again with a higher `version`; ReplacingMergeTree keeps the newest, and reads use
FINAL, so the table always answers with one current row per subscription.

The dispatcher needs the secrets themselves to sign (an HMAC key cannot be hashed), so
they go through a `SecretBox`: sealed with `SIGFLOW_WEBHOOK_SECRETS_KEY` when it is set,
else stored as given (then restrict who may read this table like any credential store).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.asyncclient import AsyncClient
from pydantic import SecretStr

from schemas.events import SEVERITY_RANK, Severity
from sigflow.settings import Settings
from sinks.warehouse import as_utc, database_name
from sinks.webhooks.exceptions import InvalidSubscription, SubscriptionNotFound
from sinks.webhooks.secret_box import SecretBox
from sinks.webhooks.signing import generate_secret
from sinks.webhooks.subscriptions import Subscription
from sinks.webhooks.url_guard import AddressPolicy, check_url

SYMBOL = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+$")
COLUMNS = (
    "subscription_id",
    "url",
    "secret",
    "previous_secret",
    "previous_secret_expires_at",
    "kinds",
    "symbols",
    "min_severity",
    "enabled",
    "disabled_reason",
    "created_at",
    "updated_at",
    "version",
)


@dataclass(frozen=True)
class NewSubscription:
    """A created subscription and its secret (shown once to whoever created it)."""

    subscription: Subscription
    secret: str


def _from_row(row: Sequence[Any], box: SecretBox) -> Subscription:
    values = dict(zip(COLUMNS, row, strict=True))
    previous = values["previous_secret"]
    return Subscription(
        subscription_id=values["subscription_id"],
        url=values["url"],
        secret=SecretStr(box.open(values["secret"])),
        previous_secret=SecretStr(box.open(previous)) if previous else None,
        previous_secret_expires_at=as_utc(values["previous_secret_expires_at"]),
        kinds=tuple(values["kinds"]),
        symbols=tuple(values["symbols"]),
        min_severity=values["min_severity"],
        enabled=bool(values["enabled"]),
        disabled_reason=values["disabled_reason"],
        created_at=as_utc(values["created_at"]),
        updated_at=as_utc(values["updated_at"]),
    )


def validate_filters(kinds: Sequence[str], symbols: Sequence[str], min_severity: str) -> None:
    """Refuse filters that could never match, with the reason."""
    if min_severity not in SEVERITY_RANK:
        raise InvalidSubscription(
            f"min severity must be one of {', '.join(SEVERITY_RANK)}, got {min_severity!r}"
        )
    if any(not kind.strip() for kind in kinds):
        raise InvalidSubscription("alert kinds must not be empty strings")
    bad = [symbol for symbol in symbols if not SYMBOL.match(symbol)]
    if bad:
        raise InvalidSubscription(f"symbols must look like BTC-USDT, got {', '.join(bad)}")


class SubscriptionStore:
    """Create, read and change webhook subscriptions."""

    def __init__(
        self, client: AsyncClient, database: str, policy: AddressPolicy, box: SecretBox
    ) -> None:
        self.client = client
        self.table = f"{database}.webhook_subscriptions"
        self.policy = policy
        self.box = box

    @classmethod
    def from_settings(cls, client: AsyncClient, settings: Settings) -> SubscriptionStore:
        """The store of the configured database, URL policy and secrets key."""
        return cls(
            client,
            database_name(settings),
            AddressPolicy.from_settings(settings),
            SecretBox.from_settings(settings),
        )

    async def create(
        self,
        url: str,
        *,
        kinds: Sequence[str] = (),
        symbols: Sequence[str] = (),
        min_severity: Severity = "info",
    ) -> NewSubscription:
        """A new enabled subscription with a fresh secret; refuses unsafe URLs."""
        validate_filters(kinds, symbols, min_severity)
        await check_url(url, self.policy)
        now = datetime.now(UTC)
        secret = generate_secret()
        subscription = Subscription(
            subscription_id="sub_" + secrets.token_hex(8),
            url=url,
            secret=SecretStr(secret),
            kinds=tuple(dict.fromkeys(kinds)),
            symbols=tuple(dict.fromkeys(symbols)),
            min_severity=min_severity,
            created_at=now,
            updated_at=now,
        )
        await self._write(subscription)
        return NewSubscription(subscription, secret)

    async def get(self, subscription_id: str) -> Subscription:
        """One subscription; `SubscriptionNotFound` if there is none with that id."""
        found = await self._select("WHERE subscription_id = {id:String}", {"id": subscription_id})
        if not found:
            raise SubscriptionNotFound(subscription_id)
        return found[0]

    async def all(self) -> list[Subscription]:
        """Every subscription, oldest first."""
        return await self._select("", {})

    async def set_enabled(
        self, subscription_id: str, enabled: bool, reason: str = ""
    ) -> Subscription:
        """Enable (re-checking the URL) or disable a subscription, with a reason."""
        current = await self.get(subscription_id)
        if enabled:
            await check_url(current.url, self.policy)
        changed = current.model_copy(
            update={
                "enabled": enabled,
                "disabled_reason": "" if enabled else reason,
                "updated_at": datetime.now(UTC),
            }
        )
        await self._write(changed)
        return changed

    async def rotate_secret(self, subscription_id: str, grace_seconds: float) -> str:
        """A new secret; the old one keeps signing (as a second signature) for the grace."""
        current = await self.get(subscription_id)
        now = datetime.now(UTC)
        secret = generate_secret()
        await self._write(
            current.model_copy(
                update={
                    "secret": SecretStr(secret),
                    "previous_secret": current.secret,
                    "previous_secret_expires_at": now + timedelta(seconds=grace_seconds),
                    "updated_at": now,
                }
            )
        )
        return secret

    async def reseal(self) -> int:
        """Write every subscription again, its secrets sealed with the first key (or plain
        with none): after setting or rotating `SIGFLOW_WEBHOOK_SECRETS_KEY`. How many."""
        subscriptions = await self.all()
        for subscription in subscriptions:
            await self._write(subscription)
        return len(subscriptions)

    async def _write(self, subscription: Subscription) -> None:
        previous = subscription.previous_secret
        row = [
            subscription.subscription_id,
            subscription.url,
            self.box.seal(subscription.secret.get_secret_value()),
            self.box.seal(previous.get_secret_value()) if previous is not None else "",
            subscription.previous_secret_expires_at,
            list(subscription.kinds),
            list(subscription.symbols),
            subscription.min_severity,
            subscription.enabled,
            subscription.disabled_reason,
            subscription.created_at,
            subscription.updated_at,
            time.time_ns(),
        ]
        await self.client.insert(self.table, [row], column_names=list(COLUMNS))

    async def _select(self, where: str, parameters: dict[str, Any]) -> list[Subscription]:
        result = await self.client.query(
            f"SELECT {', '.join(COLUMNS)} FROM {self.table} FINAL {where} "
            "ORDER BY created_at, subscription_id",
            parameters=parameters,
        )
        return [_from_row(row, self.box) for row in result.result_rows]
