"""Redelivering failed deliveries: each goes back on the retry topic for a new round.

A redelivery keeps its `webhook-id` (a receiver that did get it after all drops it) and
continues the attempt numbering; it gets `webhook_max_attempts` more tries. A `pending`
row marks it queued, so running the command twice does not queue it twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from schemas.events import Alert, PendingDelivery
from sigflow.settings import Settings
from sinks.webhooks.deliveries import DeliveryLog
from sinks.webhooks.store import SubscriptionStore


@dataclass
class RedeliveryReport:
    """What `redeliver_failed` did: queued webhook ids, and skipped ones with the reason."""

    queued: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


async def redeliver_failed(
    settings: Settings,
    deliveries: DeliveryLog,
    store: SubscriptionStore,
    producer: AIOKafkaProducer,
    *,
    subscription_id: str | None = None,
    webhook_id: str | None = None,
    limit: int = 1000,
) -> RedeliveryReport:
    """Queue failed deliveries (optionally of one subscription or one id) for a new round."""
    report = RedeliveryReport()
    subscriptions = {s.subscription_id: s for s in await store.all()}
    failed = await deliveries.states(
        status="failed", subscription_id=subscription_id, webhook_id=webhook_id, limit=limit
    )
    for state in failed:
        subscription = subscriptions.get(state.subscription_id)
        if subscription is None or not subscription.enabled:
            report.skipped[state.webhook_id] = f"subscription {state.subscription_id} is disabled"
            continue
        delivery = PendingDelivery(
            webhook_id=state.webhook_id,
            subscription_id=state.subscription_id,
            alert=Alert.model_validate_json(state.payload),
            attempt=state.attempts + 1,
            last_attempt=state.attempts + settings.webhook_max_attempts,
            due_at=int(time.time() * 1000),
        )
        await producer.send_and_wait(
            settings.topic("webhooks.retry"),
            delivery.model_dump_json().encode(),
            key=delivery.webhook_id.encode(),
        )
        await deliveries.record(delivery, "pending", error="redelivery requested")
        report.queued.append(state.webhook_id)
    return report
