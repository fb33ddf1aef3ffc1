"""The record of every delivery attempt (`webhook_deliveries`) and each delivery's state.

One row per attempt, keyed by (webhook_id, attempt): writing an attempt again after a
crash replaces it instead of adding a row. `webhook_delivery_status` (a view) shows the
latest attempt of each delivery, which is what `sigflow webhooks deliveries` lists and
what `redeliver` picks failed deliveries from.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.asyncclient import AsyncClient

from schemas.events import DeliveryStatus, PendingDelivery
from sinks.warehouse import as_utc

STATUSES: tuple[DeliveryStatus, ...] = ("pending", "delivered", "retrying", "failed")
COLUMNS = (
    "webhook_id",
    "subscription_id",
    "alert_id",
    "attempt",
    "status",
    "status_code",
    "error",
    "latency_ms",
    "attempted_at",
    "next_retry_at",
    "payload",
    "version",
)


@dataclass(frozen=True)
class DeliveryState:
    """Where one delivery stands: its latest attempt."""

    webhook_id: str
    subscription_id: str
    alert_id: str
    attempts: int
    status: DeliveryStatus
    status_code: int | None
    error: str
    last_attempt_at: datetime
    next_retry_at: datetime | None
    payload: str  # the alert as JSON, to redeliver it


def _ms_datetime(epoch_ms: int | None) -> datetime | None:
    return None if epoch_ms is None else datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


class DeliveryLog:
    """Writes attempts and reads delivery states."""

    def __init__(self, client: AsyncClient, database: str) -> None:
        self.client = client
        self.table = f"{database}.webhook_deliveries"
        self.status_view = f"{database}.webhook_delivery_status"

    async def record(
        self,
        delivery: PendingDelivery,
        status: DeliveryStatus,
        *,
        status_code: int | None = None,
        error: str = "",
        latency_seconds: float = 0.0,
        next_retry_at_ms: int | None = None,
    ) -> None:
        """Write attempt `delivery.attempt` of a delivery (replacing an earlier write)."""
        row = [
            delivery.webhook_id,
            delivery.subscription_id,
            delivery.alert.alert_id,
            delivery.attempt,
            status,
            status_code,
            error,
            round(latency_seconds * 1000, 3),
            datetime.now(UTC),
            _ms_datetime(next_retry_at_ms),
            delivery.alert.model_dump_json(),
            time.time_ns(),
        ]
        await self.client.insert(self.table, [row], column_names=list(COLUMNS))

    async def states(
        self,
        *,
        status: DeliveryStatus | None = None,
        subscription_id: str | None = None,
        webhook_id: str | None = None,
        limit: int = 100,
        before: tuple[int, str] | None = None,
    ) -> list[DeliveryState]:
        """Delivery states, newest attempt first, optionally filtered; `before` (last
        attempt epoch ms, webhook id) continues after the last state of a previous page."""
        conditions: list[str] = []
        parameters: dict[str, object] = {"limit": limit}
        if before is not None:
            conditions.append(
                "(last_attempt_at, webhook_id) < "
                "(fromUnixTimestamp64Milli({before_ms:Int64}), {before_id:String})"
            )
            parameters["before_ms"], parameters["before_id"] = before
        for column, value in (
            ("status", status),
            ("subscription_id", subscription_id),
            ("webhook_id", webhook_id),
        ):
            if value is not None:
                conditions.append(f"{column} = {{{column}:String}}")
                parameters[column] = value
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        result = await self.client.query(
            "SELECT webhook_id, subscription_id, alert_id, attempts, status, status_code, "
            "error, last_attempt_at, next_retry_at, payload "
            f"FROM {self.status_view} {where} "
            "ORDER BY last_attempt_at DESC, webhook_id DESC LIMIT {limit:UInt32}",
            parameters=parameters,
        )
        return [self._state(row) for row in result.result_rows]

    @staticmethod
    def _state(row: Sequence[Any]) -> DeliveryState:
        (webhook, subscription, alert, attempts, status, code, error, last, retry, payload) = row
        return DeliveryState(
            webhook_id=webhook,
            subscription_id=subscription,
            alert_id=alert,
            attempts=int(attempts),
            status=status,
            status_code=None if code is None else int(code),
            error=error,
            last_attempt_at=as_utc(last),
            next_retry_at=as_utc(retry),
            payload=payload,
        )
