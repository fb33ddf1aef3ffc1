"""The webhook dispatcher role: alerts in, signed deliveries out, retries through Kafka.

It consumes `alerts` (fan-out to every enabled, matching subscription) and
`webhooks.retry` (deliveries waiting for their next attempt). Each attempt ends in one
durable outcome before the record's offset may be committed:

- delivered: the attempt is recorded in `webhook_deliveries`;
- retry: the next attempt is put on `webhooks.retry` (with its `due_at`), then recorded;
- failed or 410 Gone: the delivery goes to `webhooks.dlq` and is recorded (410 also
  disables the subscription).

So a crash at any point re-reads the record and at worst sends it again under the same
`webhook-id`, which receivers de-duplicate on. A retry record not due yet pauses its
partition (seeked back to it) until it is; other partitions and `alerts` keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import BaseModel, ValidationError

from schemas.dead_letters import reject_record
from schemas.events import Alert, PendingDelivery
from sigflow import tracing
from sigflow.kafka import create_producer
from sigflow.kafka_security import kafka_client_options
from sigflow.settings import Settings
from sinks.warehouse import connect, database_name
from sinks.webhooks import metrics
from sinks.webhooks.deliveries import DeliveryLog
from sinks.webhooks.limits import EndpointLimits
from sinks.webhooks.messages import webhook_id
from sinks.webhooks.offsets import OffsetTracker, Partition
from sinks.webhooks.retry_policy import AttemptResult, Backoff, decide
from sinks.webhooks.secret_box import SecretBox
from sinks.webhooks.sender import WebhookSender
from sinks.webhooks.store import SubscriptionStore
from sinks.webhooks.subscriptions import Subscription
from sinks.webhooks.url_guard import AddressPolicy

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")
POLL_MS = 200
DURABLE_BACKOFF_START, DURABLE_BACKOFF_MAX = 0.5, 30.0
DRAIN_EXTRA_SECONDS = 5.0  # beyond one attempt's timeout, to record its outcome


def _now_ms() -> int:
    return int(time.time() * 1000)


class _ReleaseOnRevoke(ConsumerRebalanceListener):
    """Finish (or give back) the work of partitions this worker is about to lose."""

    def __init__(self, dispatcher: WebhookDispatcher) -> None:
        self.dispatcher = dispatcher

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.dispatcher.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


class WebhookDispatcher:
    """Owns the consumer, producer, HTTP sender and the delivery tasks of the role."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.alerts_topic = settings.topic("alerts")
        self.retry_topic = settings.topic("webhooks.retry")
        self.dead_letter_topic = settings.topic("webhooks.dlq")
        self.policy = AddressPolicy.from_settings(settings)
        self.box = SecretBox.from_settings(settings)  # a malformed key fails here, at start
        self.backoff = Backoff(
            settings.webhook_backoff_base_seconds, settings.webhook_backoff_max_seconds
        )
        self.consumer = AIOKafkaConsumer(
            **kafka_client_options(settings),
            group_id=settings.webhook_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_session_timeout_ms // 3,
            max_poll_interval_ms=10 * 60 * 1000,
        )
        self.producer = create_producer(settings, linger_ms=0)
        self.offsets = OffsetTracker()
        self.limits = EndpointLimits(
            total=settings.webhook_concurrency, per_endpoint=settings.webhook_endpoint_concurrency
        )
        self.subscriptions: dict[str, Subscription] = {}
        self._drain_seconds = settings.webhook_timeout_seconds + DRAIN_EXTRA_SECONDS
        self._tasks: dict[asyncio.Task[None], Partition] = {}
        self._paused: dict[TopicPartition, float] = {}  # partition -> resume at (epoch s)
        self._stopping = asyncio.Event()
        self._failure: BaseException | None = None
        self._store: SubscriptionStore | None = None
        self._log: DeliveryLog | None = None
        self._sender: WebhookSender | None = None

    def stop(self) -> None:
        """Ask `run()` to finish the attempts in flight, commit and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Dispatch until `stop()`; an unexpected error in a delivery stops and re-raises."""
        client = await connect(self.settings)
        database = database_name(self.settings)
        self._store = SubscriptionStore(client, database, self.policy, self.box)
        self._log = DeliveryLog(client, database)
        self._sender = WebhookSender(self.settings, self.policy)
        refresher: asyncio.Task[None] | None = None
        try:
            await self._durably("read subscriptions", self.refresh_subscriptions)
            await self.producer.start()
            await self.consumer.start()
            self.consumer.subscribe(
                [self.alerts_topic, self.retry_topic], listener=_ReleaseOnRevoke(self)
            )
            refresher = asyncio.create_task(self._refresh_periodically())
            await self._consume()
            await self._finish(list(self._tasks))
        finally:
            if refresher is not None:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            await self._finish(list(self._tasks), wait=False)
            await self.consumer.stop()
            await self.producer.stop()
            await self._sender.close()
            await client.close()
        if self._failure is not None:
            raise self._failure

    async def refresh_subscriptions(self) -> None:
        """Re-read every subscription (changes made elsewhere reach the dispatcher here)."""
        assert self._store is not None
        self.subscriptions = {s.subscription_id: s for s in await self._store.all()}

    async def release(self, revoked: list[TopicPartition]) -> None:
        """Rebalance: finish revoked partitions' attempts, commit them and forget them."""
        keys = {(tp.topic, tp.partition) for tp in revoked}
        await self._finish([task for task, key in self._tasks.items() if key in keys])
        self.offsets.forget(keys)
        for tp in revoked:
            self._paused.pop(tp, None)

    # ---- consuming ------------------------------------------------------------------

    async def _consume(self) -> None:
        while not self._stopping.is_set():
            self._resume_due()
            room = self.settings.webhook_max_pending - len(self._tasks)
            if room <= 0:  # back-pressure: fetch nothing until a delivery finishes
                await asyncio.wait(
                    list(self._tasks), timeout=POLL_MS / 1000, return_when="FIRST_COMPLETED"
                )
            else:
                batches = await self.consumer.getmany(timeout_ms=POLL_MS, max_records=room)
                for tp, records in batches.items():
                    await self._take(tp, records)
            await self._commit()

    async def _take(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]) -> None:
        key = (tp.topic, tp.partition)
        for record in records:
            if record.topic == self.alerts_topic:
                deliveries = await self._fan_out(record)
            else:
                pending = await self._decode(PendingDelivery, record)
                if pending is not None and pending.due_at > _now_ms():
                    # Not due: wait here (this partition only) and read it again then.
                    self.consumer.seek(tp, record.offset)
                    self.consumer.pause(tp)
                    self._paused[tp] = pending.due_at / 1000
                    return
                deliveries = [pending] if pending is not None else []
            if not deliveries:
                self.offsets.skip(key, record.offset)
                continue
            self.offsets.start(key, record.offset)
            # With tracing on: each attempt is a child of the alert's context, which a
            # retry record carries on (tracing off: None, no header is read).
            trace = tracing.extract(record.headers) if tracing.enabled() else None
            task = asyncio.create_task(self._deliver_record(key, record.offset, deliveries, trace))
            self._tasks[task] = key
            task.add_done_callback(self._task_done)

    async def _fan_out(self, record: ConsumerRecord[Any, Any]) -> list[PendingDelivery]:
        alert = await self._decode(Alert, record)
        if alert is None:
            return []
        return [
            PendingDelivery(
                webhook_id=webhook_id(alert.alert_id, subscription.subscription_id),
                subscription_id=subscription.subscription_id,
                alert=alert,
                attempt=1,
                last_attempt=self.settings.webhook_max_attempts,
                due_at=_now_ms(),
            )
            for subscription in self.subscriptions.values()
            if subscription.enabled and subscription.matches(alert)
        ]

    async def _decode(self, model: type[ModelT], record: ConsumerRecord[Any, Any]) -> ModelT | None:
        """The record's value as `model`, or None after sending it to the `dlq` topic."""
        try:
            return model.model_validate_json(record.value or b"")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or '$'}: {error['msg']}"
                for error in exc.errors()[:3]
            )
            reason = f"invalid {model.__name__}: {problems}"
        metrics.REJECTED_RECORDS.inc()
        key, value = reject_record(record, reason, "schema", "webhooks")
        dlq = self.settings.topic("dlq")
        await self._durably("dead-letter", lambda: self.producer.send_and_wait(dlq, value, key=key))
        return None

    def _resume_due(self) -> None:
        now = time.time()
        for tp, resume_at in list(self._paused.items()):
            if now >= resume_at:
                del self._paused[tp]
                if tp in self.consumer.assignment():
                    self.consumer.resume(tp)

    # ---- delivering -----------------------------------------------------------------

    async def _deliver_record(
        self,
        key: Partition,
        offset: int,
        deliveries: list[PendingDelivery],
        trace: tracing.Context | None = None,
    ) -> None:
        async with asyncio.TaskGroup() as group:
            for delivery in deliveries:
                group.create_task(self._deliver(delivery, trace))
        self.offsets.finish(key, offset)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled() or task.exception() is None:
            return
        self._failure = task.exception()
        log.error("delivery task failed; stopping", exc_info=self._failure)
        self.stop()

    async def _deliver(
        self, delivery: PendingDelivery, trace: tracing.Context | None = None
    ) -> None:
        subscription = self.subscriptions.get(delivery.subscription_id)
        if subscription is None or not subscription.enabled:
            reason = "subscription removed" if subscription is None else "subscription disabled"
            metrics.DELIVERIES.labels("failed").inc()
            await self._give_up(delivery, AttemptResult(None, reason, 0.0), trace)
            return
        endpoint = subscription.endpoint
        if self.limits.waiting(endpoint) >= self.settings.webhook_endpoint_backlog:
            metrics.DELIVERIES.labels("deferred").inc()
            await self._defer(delivery, trace)
            return
        assert self._sender is not None
        async with self.limits.slot(endpoint):
            with tracing.span(
                "webhook attempt",
                kind=tracing.SpanKind.CLIENT,
                parent=trace,
                attributes={
                    "sigflow.webhook_id": delivery.webhook_id,
                    "sigflow.subscription_id": delivery.subscription_id,
                    "sigflow.alert_id": delivery.alert.alert_id,
                    "sigflow.attempt": delivery.attempt,
                },
            ) as attempt:
                result = await self._sender.send(subscription, delivery)
                if attempt is not None:
                    attempt.set_attribute("http.response.status_code", result.status_code or 0)
                    if result.error:
                        attempt.set_attribute("error.type", result.error)
        metrics.ATTEMPT_SECONDS.observe(result.latency_seconds)
        decision = decide(result, delivery.attempt, delivery.last_attempt)
        metrics.DELIVERIES.labels(decision).inc()
        if decision == "delivered":
            await self._record(delivery, "delivered", result)
        elif decision == "retry":
            await self._schedule_retry(delivery, result, trace)
        else:
            if decision == "disable":
                await self._disable(subscription, result)
            await self._give_up(delivery, result, trace)

    async def _schedule_retry(
        self, delivery: PendingDelivery, result: AttemptResult, trace: tracing.Context | None
    ) -> None:
        due = _now_ms() + int(
            self.backoff.delay(delivery.attempt, result.retry_after_seconds) * 1000
        )
        retry = delivery.model_copy(
            update={
                "attempt": delivery.attempt + 1,
                "due_at": due,
                "last_status_code": result.status_code,
                "last_error": result.error,
            }
        )
        await self._produce(self.retry_topic, retry, trace)
        metrics.RETRIES_SCHEDULED.inc()
        await self._record(delivery, "retrying", result, next_retry_at_ms=due)

    async def _defer(self, delivery: PendingDelivery, trace: tracing.Context | None) -> None:
        """Endpoint backlog full: park this attempt on the retry topic without using it."""
        due = _now_ms() + int(self.settings.webhook_backoff_base_seconds * 1000)
        deferred = delivery.model_copy(update={"due_at": due})
        await self._produce(self.retry_topic, deferred, trace)
        await self._durably(
            "record a deferral",
            lambda: self._deliveries.record(
                delivery, "pending", error="deferred: endpoint backlog full", next_retry_at_ms=due
            ),
        )

    async def _give_up(
        self, delivery: PendingDelivery, result: AttemptResult, trace: tracing.Context | None
    ) -> None:
        dead = delivery.model_copy(
            update={"last_status_code": result.status_code, "last_error": result.error}
        )
        await self._produce(self.dead_letter_topic, dead, trace)
        await self._record(delivery, "failed", result)
        log.warning(
            "webhook delivery failed for good",
            extra={
                "webhook_id": delivery.webhook_id,
                "subscription_id": delivery.subscription_id,
                "attempt": delivery.attempt,
                "error": result.error,
            },
        )

    async def _disable(self, subscription: Subscription, result: AttemptResult) -> None:
        store = self._store
        assert store is not None
        reason = f"receiver answered {result.status_code} Gone"
        changed = await self._durably(
            "disable subscription",
            lambda: store.set_enabled(subscription.subscription_id, False, reason),
        )
        self.subscriptions[subscription.subscription_id] = changed
        metrics.SUBSCRIPTIONS_DISABLED.inc()
        log.warning(
            "subscription disabled", extra={"subscription_id": subscription.subscription_id}
        )

    @property
    def _deliveries(self) -> DeliveryLog:
        assert self._log is not None
        return self._log

    async def _record(
        self,
        delivery: PendingDelivery,
        status: Any,
        result: AttemptResult,
        next_retry_at_ms: int | None = None,
    ) -> None:
        await self._durably(
            "record an attempt",
            lambda: self._deliveries.record(
                delivery,
                status,
                status_code=result.status_code,
                error=result.error or "",
                latency_seconds=result.latency_seconds,
                next_retry_at_ms=next_retry_at_ms,
            ),
        )

    async def _produce(
        self, topic: str, delivery: PendingDelivery, trace: tracing.Context | None = None
    ) -> None:
        value, key = delivery.model_dump_json().encode(), delivery.webhook_id.encode()
        headers = tracing.inject(trace) if trace is not None else None
        await self._durably(
            f"produce to {topic}",
            lambda: self.producer.send_and_wait(topic, value, key=key, headers=headers),
        )

    async def _durably(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run `action` until it succeeds: Kafka or ClickHouse being down only delays it."""
        delay = DURABLE_BACKOFF_START
        while True:
            try:
                return await action()
            except (KafkaError, ClickHouseError, OSError) as exc:
                wait = random.uniform(delay / 2, delay)
                log.warning(
                    f"cannot {what} yet, retrying",
                    extra={"error": str(exc), "delay_seconds": round(wait, 2)},
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, DURABLE_BACKOFF_MAX)

    # ---- offsets and shutdown -------------------------------------------------------

    async def _commit(self) -> None:
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        ready = {
            key: offset for key, offset in self.offsets.committable().items() if key in assigned
        }
        if not ready:
            return
        try:
            await self.consumer.commit(
                {TopicPartition(*key): offset for key, offset in ready.items()}
            )
        except KafkaError as exc:
            # Not committed: the records are read again (here or by the next owner) and
            # sent again under the same webhook-id.
            log.warning("offset commit failed", extra={"error": str(exc)})
            return
        self.offsets.committed(ready)

    async def _finish(self, tasks: list[asyncio.Task[None]], *, wait: bool = True) -> None:
        """Let `tasks` end (up to one attempt's time), cancel the rest, commit what is done."""
        if tasks and wait:
            await asyncio.wait(tasks, timeout=self._drain_seconds)
        unfinished = [task for task in tasks if not task.done()]
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
        if self.consumer.assignment():
            await self._commit()

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.webhook_subscription_refresh_seconds)
            try:
                await self.refresh_subscriptions()
            except (ClickHouseError, OSError) as exc:
                log.warning("cannot re-read subscriptions", extra={"error": str(exc)})
