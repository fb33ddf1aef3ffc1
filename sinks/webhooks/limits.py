"""Bounded concurrency: a global bound and one bound per endpoint (`host:port`).

A delivery first takes a slot of its endpoint, then a global slot, so deliveries
queued behind a slow receiver hold no global slot and other endpoints keep going.
`waiting()` lets the dispatcher defer work for an endpoint whose queue is already long.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sinks.webhooks import metrics


class EndpointLimits:
    """Slots for delivery requests, per endpoint and overall."""

    def __init__(self, *, total: int, per_endpoint: int) -> None:
        self.per_endpoint = per_endpoint
        self._total = asyncio.Semaphore(total)
        self._endpoints: dict[str, asyncio.Semaphore] = {}
        self._waiting: dict[str, int] = {}

    def waiting(self, endpoint: str) -> int:
        """Deliveries queued for a slot of `endpoint`."""
        return self._waiting.get(endpoint, 0)

    @asynccontextmanager
    async def slot(self, endpoint: str) -> AsyncIterator[None]:
        """Hold one slot of `endpoint` and one global slot for the duration."""
        semaphore = self._endpoints.setdefault(endpoint, asyncio.Semaphore(self.per_endpoint))
        self._waiting[endpoint] = self.waiting(endpoint) + 1
        metrics.WAITING.labels(endpoint).inc()
        try:
            await semaphore.acquire()
        finally:
            self._waiting[endpoint] -= 1
            metrics.WAITING.labels(endpoint).dec()
        try:
            async with self._total:
                metrics.IN_FLIGHT.labels(endpoint).inc()
                try:
                    yield
                finally:
                    metrics.IN_FLIGHT.labels(endpoint).dec()
        finally:
            semaphore.release()
