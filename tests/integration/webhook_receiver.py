"""A real HTTP receiver for webhook tests, and helpers around the dispatcher.

The receiver runs on 127.0.0.1 in the test's event loop (aiohttp), verifies every
request with its own verifier (written from the Standard Webhooks text, sharing no code
with sigflow) and with the `standardwebhooks` reference library, and de-duplicates on
`webhook-id` the way a receiver should.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from standardwebhooks import Webhook, WebhookVerificationError

from schemas.events import Alert
from schemas.topics import TOPICS
from sigflow.kafka import create_producer, ensure_topics
from sigflow.roles import migrate
from sigflow.settings import Settings
from sigflow.stack.process import free_port
from sinks.warehouse import connect
from sinks.webhooks.dispatcher import WebhookDispatcher
from sinks.webhooks.store import NewSubscription, SubscriptionStore

TOLERANCE_SECONDS = 300


def independent_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """HMAC-SHA256 of `id.timestamp.body` under the base64 key after `whsec_`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    timestamp = int(headers["webhook-timestamp"])
    if abs(time.time() - timestamp) > TOLERANCE_SECONDS:
        return False
    signed = f"{headers['webhook-id']}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(expected, signature.removeprefix("v1,"))
        for signature in headers["webhook-signature"].split()
        if signature.startswith("v1,")
    )


def library_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Arrival:
    webhook_id: str
    at: float
    headers: dict[str, str]
    body: bytes
    verified_independently: bool
    verified_by_library: bool


class Receiver:
    """Answers per `plan(webhook_id, nth request for that id)`; records what arrived."""

    def __init__(self, plan: Callable[[str, int], Reply] | None = None) -> None:
        self.plan = plan or (lambda _id, _n: Reply())
        self.port = free_port()
        self.secrets: list[str] = []
        self.arrivals: list[Arrival] = []
        self.processed: dict[str, dict[str, Any]] = {}  # de-duplicated on webhook-id
        self.processed_twice: list[str] = []
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/hooks/sigflow") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def seen(self, webhook_id: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.webhook_id == webhook_id]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        message_id = headers.get("webhook-id", "")
        arrival = Arrival(
            message_id,
            time.time(),
            headers,
            body,
            any(independent_verify(s, headers, body) for s in self.secrets),
            any(library_verify(s, headers, body) for s in self.secrets),
        )
        self.arrivals.append(arrival)
        reply = self.plan(message_id, len(self.seen(message_id)))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if 200 <= reply.status < 300 and arrival.verified_independently:
            if message_id in self.processed:
                self.processed_twice.append(message_id)  # a receiver would drop it here
            else:
                self.processed[message_id] = orjson.loads(body)
        return web.Response(status=reply.status, headers=reply.headers)


@contextlib.asynccontextmanager
async def receiving(plan: Callable[[str, int], Reply] | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver(plan)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def webhook_settings(settings: Settings, **overrides: Any) -> Settings:
    """Test settings: loopback allowed, short timeouts and back-off."""
    values: dict[str, Any] = {
        "webhook_allow_private": True,
        "webhook_timeout_seconds": 1.0,
        "webhook_backoff_base_seconds": 0.2,
        "webhook_backoff_max_seconds": 1.0,
        "webhook_max_attempts": 4,
        "webhook_subscription_refresh_seconds": 0.3,
        "webhook_group_id": f"webhooks-{settings.clickhouse_database}",
    }
    values.update(overrides)
    return settings.model_copy(update=values)


async def prepare(settings: Settings) -> None:
    await ensure_topics(settings)
    await migrate(settings)


@contextlib.asynccontextmanager
async def subscription_store(settings: Settings) -> AsyncIterator[SubscriptionStore]:
    client = await connect(settings)
    try:
        yield SubscriptionStore.from_settings(client, settings)
    finally:
        await client.close()


async def subscribe(settings: Settings, receiver: Receiver, **filters: Any) -> NewSubscription:
    async with subscription_store(settings) as store:
        created = await store.create(receiver.url(), **filters)
    receiver.secrets.append(created.secret)
    return created


@contextlib.asynccontextmanager
async def dispatching(settings: Settings) -> AsyncIterator[WebhookDispatcher]:
    """The dispatcher running in this event loop; stopped (and checked) on exit."""
    dispatcher = WebhookDispatcher(settings)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 30)


def make_alert(n: int, **fields: Any) -> Alert:
    values: dict[str, Any] = {
        "alert_id": f"big-moves:price_jump:binance:BTC-USDT:{1_718_000_040_000 + n}",
        "rule": "big-moves",
        "source": "anomaly",
        "kind": "price_jump",
        "severity": "critical",
        "subject": "binance:BTC-USDT",
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "ts": 1_718_000_040_000 + n,
        "title": "BTC-USDT on binance jumped +3.1% in 1m",
        "explanation": "1m return +3.1% is 9.3 robust z-scores from the median",
        "score": 9.3,
    }
    values.update(fields)
    return Alert.model_validate(values)


async def publish_alerts(settings: Settings, alerts: list[Alert]) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        for alert in alerts:
            await producer.send(
                settings.topic("alerts"), alert.model_dump_json().encode(), key=alert.rule.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


async def query(settings: Settings, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
    client = await connect(settings)
    try:
        result = await client.query(sql, parameters=parameters)
        return [tuple(row) for row in result.result_rows]
    finally:
        await client.close()


async def read_topic(settings: Settings, name: str) -> list[dict[str, Any]]:
    """Every record value of a registry topic up to its end now, as JSON."""
    count = TOPICS[name].partitions or settings.topic_partitions
    partitions = [TopicPartition(settings.topic(name), p) for p in range(count)]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        values: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while any([await consumer.position(tp) < end[tp] for tp in partitions]):
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    values += [orjson.loads(record.value) for record in batch]
    finally:
        await consumer.stop()
    return values
