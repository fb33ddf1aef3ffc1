"""One signed HTTP attempt of a delivery: request, timeout and the result (never raises)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx

from schemas.events import PendingDelivery
from sigflow.settings import Settings
from sinks.webhooks.exceptions import UnsafeUrlError
from sinks.webhooks.messages import message_body, message_headers
from sinks.webhooks.retry_policy import AttemptResult, parse_retry_after
from sinks.webhooks.subscriptions import Subscription
from sinks.webhooks.transport import GuardedTransport
from sinks.webhooks.url_guard import AddressPolicy


class WebhookSender:
    """POSTs deliveries through the guarded transport; `async with` or `close()`."""

    def __init__(self, settings: Settings, policy: AddressPolicy) -> None:
        self.timeout = settings.webhook_timeout_seconds
        self.client = httpx.AsyncClient(
            transport=GuardedTransport(policy, max_connections=settings.webhook_concurrency),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,  # a redirect could lead anywhere; it counts as a failure
            trust_env=False,
        )

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.aclose()

    async def send(self, subscription: Subscription, delivery: PendingDelivery) -> AttemptResult:
        """Make one attempt; errors come back in the result, never as exceptions."""
        return await self.post(subscription, delivery.webhook_id, message_body(delivery.alert))

    async def post(self, subscription: Subscription, message_id: str, body: bytes) -> AttemptResult:
        """POST one signed message (an alert, or a test ping) to the subscription's URL."""
        now = time.time()
        headers = message_headers(
            message_id,
            int(now),
            body,
            subscription.signing_secrets(datetime.fromtimestamp(now, tz=UTC)),
        )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                # Streamed and never read: a receiver's answer body is not ours to buffer.
                async with self.client.stream(
                    "POST", subscription.url, content=body, headers=headers
                ) as response:
                    status = response.status_code
                    retry_after = response.headers.get("retry-after")
        except UnsafeUrlError as exc:
            return AttemptResult(None, str(exc), time.perf_counter() - started, refused=True)
        except (TimeoutError, httpx.TimeoutException):
            timeout = f"timeout after {self.timeout:g} s"
            return AttemptResult(None, timeout, time.perf_counter() - started)
        except httpx.HTTPError as exc:
            message = f"{exc.__class__.__name__}: {exc}".rstrip(": ")
            return AttemptResult(None, message, time.perf_counter() - started)
        latency = time.perf_counter() - started
        error = None if 200 <= status < 300 else f"HTTP {status}"
        return AttemptResult(status, error, latency, parse_retry_after(retry_after, time.time()))
