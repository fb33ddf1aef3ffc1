"""In-memory fan-out of stream events to live clients, each behind a bounded queue.

`publish` never waits: an event goes into each matching client's queue, and a client
whose queue is full is dropped on the spot with a reason (its pending events are
discarded and it receives the `Dropped` marker instead). One slow client therefore
costs the others nothing, and memory is bounded by clients x queue size.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

STREAM_CLIENTS = Gauge(
    "sigflow_api_stream_clients", "Connected live-stream clients.", ["transport"]
)
STREAM_DROPPED = Counter(
    "sigflow_api_stream_dropped_total", "Live-stream clients dropped by the server.", ["reason"]
)
STREAM_EVENTS = Counter(
    "sigflow_api_stream_events_total", "Events queued for live-stream clients.", ["topic"]
)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One message for clients: its topic, symbol (None: not about a symbol) and JSON."""

    topic: str
    symbol: str | None
    payload: bytes  # `{"topic": ..., "data": ...}`, encoded once for every client


@dataclass(frozen=True, slots=True)
class Dropped:
    """Put in a client's queue instead of its events when the server drops it."""

    reason: str
    code: str = "slow_client"


@dataclass(frozen=True)
class Subscription:
    """Topics a client wants, and symbols (empty: every symbol)."""

    topics: frozenset[str]
    symbols: frozenset[str] = frozenset()

    def matches(self, event: StreamEvent) -> bool:
        """Symbol filter; events without a symbol pass only an unfiltered subscription."""
        return not self.symbols or event.symbol in self.symbols


@dataclass(eq=False)
class StreamClient:
    """One connection's queue and subscription; the route drains `queue`."""

    transport: str
    subscription: Subscription
    queue: asyncio.Queue[StreamEvent | Dropped]
    dropped: Dropped | None = None


@dataclass
class Hub:
    """Routes each published event to the queues of the clients subscribed to it."""

    queue_size: int
    recent_size: int = 0
    _clients: set[StreamClient] = field(default_factory=set)
    _by_topic: dict[str, set[StreamClient]] = field(default_factory=dict)
    _recent: dict[str, deque[StreamEvent]] = field(default_factory=dict)

    def connect(self, transport: str, subscription: Subscription) -> StreamClient:
        """A new client, registered for its subscription."""
        client = StreamClient(transport, subscription, asyncio.Queue(self.queue_size))
        self._clients.add(client)
        self._register(client)
        STREAM_CLIENTS.labels(transport).inc()
        return client

    def resubscribe(self, client: StreamClient, subscription: Subscription) -> None:
        """Replace what a connected client receives."""
        self._unregister(client)
        client.subscription = subscription
        self._register(client)

    def disconnect(self, client: StreamClient) -> None:
        """Forget a client (safe to call twice, and after a drop)."""
        if client in self._clients:
            self._clients.discard(client)
            self._unregister(client)
            STREAM_CLIENTS.labels(client.transport).dec()

    def clients(self) -> int:
        return len(self._clients)

    def publish(self, event: StreamEvent, *, remember: bool = True) -> None:
        """Queue `event` for every matching client; drop those that cannot take it."""
        if remember and self.recent_size:
            self._recent.setdefault(event.topic, deque(maxlen=self.recent_size)).append(event)
        clients = self._by_topic.get(event.topic)
        if not clients:
            return
        STREAM_EVENTS.labels(event.topic).inc()
        for client in list(clients):
            if client.subscription.matches(event):
                self._offer(client, event)

    def _offer(self, client: StreamClient, event: StreamEvent) -> None:
        try:
            client.queue.put_nowait(event)
        except asyncio.QueueFull:
            reason = (
                f"slow client: {self.queue_size} events were waiting to be sent, "
                "reconnect and read faster"
            )
            self.drop(client, Dropped(reason))

    def reply(self, client: StreamClient, event: StreamEvent) -> None:
        """Queue a message for one client only (e.g. the answer to its command)."""
        if client.dropped is None:
            self._offer(client, event)

    def drop(self, client: StreamClient, dropped: Dropped) -> None:
        """Disconnect `client`, discard its pending events and leave it `dropped`."""
        if client.dropped is not None:
            return
        self.disconnect(client)
        client.dropped = dropped
        STREAM_DROPPED.labels(dropped.code).inc()
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(dropped)

    def recent(self, subscription: Subscription) -> list[StreamEvent]:
        """Remembered events the subscription matches, oldest first, per topic."""
        return [
            event
            for topic in sorted(subscription.topics)
            for event in self._recent.get(topic, ())
            if subscription.matches(event)
        ]

    def _register(self, client: StreamClient) -> None:
        for topic in client.subscription.topics:
            self._by_topic.setdefault(topic, set()).add(client)

    def _unregister(self, client: StreamClient) -> None:
        for topic in client.subscription.topics:
            self._by_topic.get(topic, set()).discard(client)
