"""The live stream: `WS /v1/stream` and `GET /v1/stream/sse`, fed by the topic feed.

Both take `topics` and `symbols` (comma-separated) and `snapshot=true` (first send the
current prices and the newest remembered events). Every message is one JSON object
`{"topic": NAME, "data": EVENT}`. A client that cannot keep up is dropped with a reason:
WebSocket close code 4008, or a final SSE `dropped` event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from api.deps import PriceBookDep, SettingsDep, authenticate, get_hub, require_stream_key
from api.errors import ApiError, ErrorPublic
from api.fanout import Dropped, Hub, StreamClient, StreamEvent, Subscription
from api.feed import STREAM_TOPICS, price_event
from api.pricebook import PriceBook
from api.routes.prices import parse_symbols

router = APIRouter(prefix="/v1/stream", tags=["stream"])

SLOW_CLIENT_CLOSE = 4008  # WebSocket close code of a dropped slow client
AUTH_CLOSE_BASE = 4000  # + the HTTP status: 4401 no/invalid key, 4429 rate limited, 4422 bad
TopicsParam = Annotated[
    str | None,
    Query(
        max_length=500,
        description="Comma-separated topics: " + ", ".join(STREAM_TOPICS) + " (default: all).",
    ),
]
SymbolsParam = Annotated[
    str | None,
    Query(max_length=2_000, description="Comma-separated `BASE-QUOTE` symbols (default: all)."),
]
SnapshotParam = Annotated[
    bool,
    Query(description="First send current prices and the newest remembered events."),
]
HubDep = Annotated[Hub, Depends(get_hub)]


def parse_subscription(topics: str | list[str] | None, symbols: str | None) -> Subscription:
    """Topics and symbols from parameters; 422 naming an unknown topic or bad symbol."""
    names = topics.split(",") if isinstance(topics, str) else [str(t) for t in topics or ()]
    wanted = {name.strip() for name in names if name.strip()} or set(STREAM_TOPICS)
    unknown = sorted(wanted - STREAM_TOPICS.keys())
    if unknown:
        raise ApiError(
            422,
            "invalid_topic",
            f"topics: unknown {unknown}; known: {', '.join(STREAM_TOPICS)}",
        )
    return Subscription(frozenset(wanted), frozenset(parse_symbols(symbols) or ()))


def snapshot_events(hub: Hub, book: PriceBook, subscription: Subscription) -> list[StreamEvent]:
    """What a client asking for a snapshot gets before live events."""
    events = hub.recent(subscription)
    if "prices" in subscription.topics:
        prices = [price_event(trade) for trade in book.trades()]
        events = [event for event in prices if subscription.matches(event)] + events
    return events


def _subscribed(subscription: Subscription) -> bytes:
    data = {"topics": sorted(subscription.topics), "symbols": sorted(subscription.symbols)}
    return orjson.dumps({"topic": "subscribed", "data": data})


def _sse(event: str, data: bytes) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), data)


@router.get(
    "/sse",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."},
        401: {"model": ErrorPublic},
        422: {"model": ErrorPublic},
        429: {"model": ErrorPublic},
    },
)
async def stream_sse(
    _caller: Annotated[str, Depends(require_stream_key)],
    settings: SettingsDep,
    hub: HubDep,
    book: PriceBookDep,
    topics: TopicsParam = None,
    symbols: SymbolsParam = None,
    snapshot: SnapshotParam = False,
) -> StreamingResponse:
    """Server-sent events: `event:` is the topic, `data:` the message. Browsers connect
    with `new EventSource('/v1/stream/sse?topics=prices&api_key=...')`. A dropped client
    gets a final `dropped` event whose data says why."""
    subscription = parse_subscription(topics, symbols)
    client = hub.connect("sse", subscription)
    first = snapshot_events(hub, book, subscription) if snapshot else []

    async def events() -> AsyncIterator[bytes]:
        try:
            yield _sse("subscribed", _subscribed(subscription))
            for event in first:
                yield _sse(event.topic, event.payload)
            while True:
                try:
                    item = await asyncio.wait_for(
                        client.queue.get(), settings.api_stream_heartbeat_seconds
                    )
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if isinstance(item, Dropped):
                    yield _sse("dropped", orjson.dumps({"code": item.code, "reason": item.reason}))
                    return
                yield _sse(item.topic, item.payload)
        finally:
            hub.disconnect(client)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.websocket("")
async def stream_ws(
    websocket: WebSocket,
    topics: TopicsParam = None,
    symbols: SymbolsParam = None,
    snapshot: SnapshotParam = False,
    api_key: Annotated[str | None, Query(max_length=200)] = None,
) -> None:
    """WebSocket: text frames of `{"topic", "data"}`. Send
    `{"action": "subscribe", "topics": [...], "symbols": [...]}` to change what arrives."""
    await websocket.accept()
    try:
        await authenticate(websocket, websocket.headers.get("x-api-key") or api_key)
        subscription = parse_subscription(topics, symbols)
    except ApiError as exc:
        await websocket.close(AUTH_CLOSE_BASE + exc.status, exc.message[:120])
        return
    hub: Hub = get_hub(websocket)
    client = hub.connect("ws", subscription)
    try:
        await websocket.send_text(_subscribed(subscription).decode())
        if snapshot:
            for event in snapshot_events(hub, websocket.app.state.price_book, subscription):
                await websocket.send_text(event.payload.decode())
        reader = asyncio.create_task(_read_commands(websocket, hub, client))
        try:
            dropped = await _write_events(websocket, client, reader)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await reader
        if dropped is not None:
            await websocket.close(SLOW_CLIENT_CLOSE, dropped.reason[:120])
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(client)


async def _write_events(
    websocket: WebSocket, client: StreamClient, reader: asyncio.Task[None]
) -> Dropped | None:
    """Send queued events until the client is dropped (returned) or goes away."""
    while not reader.done():
        getter = asyncio.ensure_future(client.queue.get())
        await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            break
        item = getter.result()
        if isinstance(item, Dropped):
            return item
        await websocket.send_text(item.payload.decode())
    return None


async def _read_commands(websocket: WebSocket, hub: Hub, client: StreamClient) -> None:
    """Apply `subscribe` commands; answer anything else with an `error` message.

    Replies go through the client's queue, so only the writer ever sends."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text") or (message.get("bytes") or b"").decode(errors="replace")
        try:
            command = orjson.loads(text)
            if not isinstance(command, dict) or command.get("action") != "subscribe":
                raise ApiError(422, "invalid_command", 'send {"action": "subscribe", ...}')
            symbols = command.get("symbols") or []
            topics = command.get("topics")
            if not isinstance(symbols, list) or not isinstance(topics, list | None):
                raise ApiError(422, "invalid_command", "topics and symbols must be lists")
            subscription = parse_subscription(topics, ",".join(map(str, symbols)) or None)
        except (orjson.JSONDecodeError, ApiError) as exc:
            error = exc if isinstance(exc, ApiError) else ApiError(422, "invalid_json", str(exc))
            message = {"topic": "error", "data": {"code": error.code, "message": error.message}}
            hub.reply(client, StreamEvent("error", None, orjson.dumps(message)))
            continue
        hub.resubscribe(client, subscription)
        hub.reply(client, StreamEvent("subscribed", None, _subscribed(subscription)))
