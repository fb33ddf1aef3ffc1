"""A local fake exchange: WebSocket + REST on one 127.0.0.1 port, scripted by a test.

It speaks one exchange's real wire format (a `Wire`: how it acknowledges a subscribe,
answers a ping, frames trades, and serves the REST backfill) over aiohttp's server, and
keeps a *tape*: every trade that "happened" on the exchange, whether or not it was sent
over the socket. REST answers come from the tape, so a test can skip trades on the
socket (a dropped message, an outage) and check the feed recovers exactly those.

Scripting: `publish()` trades (tape + socket), `happen()` trades (tape only: missed),
`send_raw()` anything, `drop()` every connection without a close frame, `silent = True`
(no data, no pongs: for the watchdog), `throttle_next = N` (the next N REST calls get
429 with `Retry-After`). Adding an exchange: write its `Wire` subclass and add it to
`WIRES` (`decode()` for plain-text client messages such as OKX's `ping`, `greeting()` for
what the exchange sends unasked on connect such as Kraken's `status`; REST path
parameters reach `rest_answer()` with the query, as for Coinbase's `{product_id}`).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from aiohttp import WSMsgType, web


@dataclass(frozen=True)
class TapeTrade:
    """A trade as the exchange knows it (exchange symbol spelling, string numbers)."""

    symbol: str
    trade_id: str
    price: str
    size: str
    taker_buys: bool
    ts: int
    pair: str  # the same symbol as BASE-QUOTE


class Wire:
    """One exchange's wire format, server side."""

    exchange: ClassVar[str]
    ws_path: ClassVar[str]  # where the adapter connects below the WS base URL
    ws_base_suffix: ClassVar[str] = ""  # part of ws_path that belongs in the base URL
    rest_path: ClassVar[str]

    def native_symbol(self, symbol: str) -> str:
        return symbol.replace("-", "")

    def decode(self, text: str) -> Any:
        """A client message (JSON; a wire with plain-text pings overrides this)."""
        return orjson.loads(text)

    def greeting(self) -> list[str]:
        """Messages the exchange sends on its own right after a connection opens."""
        return []

    def trade_ids(self) -> itertools.count[int] | None:
        """Consecutive ids per symbol, or None when ids are opaque."""
        return itertools.count(1_000)

    def replies(self, message: Any) -> list[str]:
        raise NotImplementedError

    def is_subscribe(self, message: Any) -> bool:
        raise NotImplementedError

    def trade_messages(self, trades: list[TapeTrade]) -> list[str]:
        raise NotImplementedError

    def rest_answer(self, query: Mapping[str, str], tape: list[TapeTrade]) -> Any:
        raise NotImplementedError


class BinanceWire(Wire):
    exchange = "binance"
    ws_path = "/ws"
    rest_path = "/api/v3/historicalTrades"

    def replies(self, message: Any) -> list[str]:
        if message.get("method") == "SUBSCRIBE":
            return [orjson.dumps({"result": None, "id": message["id"]}).decode()]
        return []

    def is_subscribe(self, message: Any) -> bool:
        return bool(message.get("method") == "SUBSCRIBE")

    def trade_messages(self, trades: list[TapeTrade]) -> list[str]:
        return [
            orjson.dumps(
                {
                    "e": "trade",
                    "E": t.ts + 1,
                    "s": t.symbol,
                    "t": int(t.trade_id),
                    "p": t.price,
                    "q": t.size,
                    "T": t.ts,
                    "m": not t.taker_buys,
                    "M": True,
                }
            ).decode()
            for t in trades
        ]

    def rest_answer(self, query: Mapping[str, str], tape: list[TapeTrade]) -> Any:
        first, limit = int(query["fromId"]), int(query.get("limit", "500"))
        rows = sorted(
            (t for t in tape if t.symbol == query["symbol"] and int(t.trade_id) >= first),
            key=lambda t: int(t.trade_id),
        )[:limit]
        return [
            {
                "id": int(t.trade_id),
                "price": t.price,
                "qty": t.size,
                "quoteQty": str(float(t.price) * float(t.size)),
                "time": t.ts,
                "isBuyerMaker": not t.taker_buys,
                "isBestMatch": True,
            }
            for t in rows
        ]


class BybitWire(Wire):
    exchange = "bybit"
    ws_path = "/v5/public/spot"
    ws_base_suffix = "/v5/public/spot"
    rest_path = "/v5/market/recent-trade"

    def trade_ids(self) -> None:
        return None

    def replies(self, message: Any) -> list[str]:
        if message.get("op") == "subscribe":
            ack = {
                "success": True,
                "ret_msg": "",
                "conn_id": "fake",
                "req_id": message.get("req_id", ""),
                "op": "subscribe",
            }
            return [orjson.dumps(ack).decode()]
        if message.get("op") == "ping":
            pong = {"success": True, "ret_msg": "pong", "conn_id": "fake", "op": "ping"}
            return [orjson.dumps(pong).decode()]
        return []

    def is_subscribe(self, message: Any) -> bool:
        return bool(message.get("op") == "subscribe")

    def trade_messages(self, trades: list[TapeTrade]) -> list[str]:
        messages = []
        for symbol, group in itertools.groupby(trades, key=lambda t: t.symbol):
            batch = list(group)
            messages.append(
                orjson.dumps(
                    {
                        "topic": f"publicTrade.{symbol}",
                        "type": "snapshot",
                        "ts": batch[-1].ts + 1,
                        "data": [
                            {
                                "T": t.ts,
                                "s": t.symbol,
                                "S": "Buy" if t.taker_buys else "Sell",
                                "v": t.size,
                                "p": t.price,
                                "L": "PlusTick",
                                "i": t.trade_id,
                                "BT": False,
                            }
                            for t in batch
                        ],
                    }
                ).decode()
            )
        return messages

    def rest_answer(self, query: Mapping[str, str], tape: list[TapeTrade]) -> Any:
        limit = min(60, int(query.get("limit", "60")))
        rows = [t for t in tape if t.symbol == query["symbol"]][-limit:]
        return {
            "retCode": 0,
            "retMsg": "OK",
            "result": {
                "category": "spot",
                "list": [
                    {
                        "execId": t.trade_id,
                        "symbol": t.symbol,
                        "price": t.price,
                        "size": t.size,
                        "side": "Buy" if t.taker_buys else "Sell",
                        "time": str(t.ts),
                        "isBlockTrade": False,
                    }
                    for t in reversed(rows)  # newest first, as the API answers
                ],
            },
            "retExtInfo": {},
            "time": rows[-1].ts if rows else 0,
        }


class CoinbaseWire(Wire):
    exchange = "coinbase"
    ws_path = "/"
    rest_path = "/api/v3/brokerage/market/products/{product_id}/ticker"

    def __init__(self) -> None:
        self._sequence = itertools.count()
        self._subscribed: dict[str, list[str]] = {}

    def native_symbol(self, symbol: str) -> str:
        return symbol

    def trade_ids(self) -> None:
        return None

    def _envelope(self, channel: str, events: list[Any]) -> str:
        return orjson.dumps(
            {
                "channel": channel,
                "client_id": "",
                "timestamp": "2026-01-01T00:00:00.000000000Z",
                "sequence_num": next(self._sequence),
                "events": events,
            }
        ).decode()

    def replies(self, message: Any) -> list[str]:
        if message.get("type") != "subscribe":
            return []
        self._subscribed[message["channel"]] = message.get("product_ids", [message["channel"]])
        return [self._envelope("subscriptions", [{"subscriptions": dict(self._subscribed)}])]

    def is_subscribe(self, message: Any) -> bool:
        return bool(
            message.get("type") == "subscribe" and message.get("channel") == "market_trades"
        )

    def trade_messages(self, trades: list[TapeTrade]) -> list[str]:
        rows = [
            {
                "trade_id": t.trade_id,
                "product_id": t.symbol,
                "price": t.price,
                "size": t.size,
                "side": "BUY" if t.taker_buys else "SELL",
                "time": _rfc3339(t.ts),
            }
            for t in trades
        ]
        return [self._envelope("market_trades", [{"type": "update", "trades": rows}])]

    def rest_answer(self, query: Mapping[str, str], tape: list[TapeTrade]) -> Any:
        rows = [t for t in tape if t.symbol == query["product_id"]][-int(query["limit"]) :]
        return {
            "trades": [
                {
                    "trade_id": t.trade_id,
                    "product_id": t.symbol,
                    "price": t.price,
                    "size": t.size,
                    "time": _rfc3339(t.ts),
                    "side": "BUY" if t.taker_buys else "SELL",
                    "exchange": "COINBASE",
                }
                for t in reversed(rows)  # newest first
            ],
            "best_bid": "1",
            "best_ask": "2",
        }


class KrakenWire(Wire):
    exchange = "kraken"
    ws_path = "/v2"
    ws_base_suffix = "/v2"
    rest_path = "/0/public/Trades"

    def native_symbol(self, symbol: str) -> str:
        return symbol.replace("-", "/")

    def greeting(self) -> list[str]:
        status = {"api_version": "v2", "connection_id": 1, "system": "online", "version": "2.0.0"}
        return [orjson.dumps({"channel": "status", "data": [status], "type": "update"}).decode()]

    def replies(self, message: Any) -> list[str]:
        times = {
            "time_in": "2026-01-01T00:00:00.000001Z",
            "time_out": "2026-01-01T00:00:00.000002Z",
        }
        if message.get("method") == "ping":
            return [
                orjson.dumps({"method": "pong", "req_id": message.get("req_id"), **times}).decode()
            ]
        if message.get("method") != "subscribe":
            return []
        params = message["params"]
        return [
            orjson.dumps(
                {
                    "method": "subscribe",
                    "result": {"channel": params["channel"], "snapshot": False, "symbol": symbol},
                    "success": True,
                    **times,
                }
            ).decode()
            for symbol in params["symbol"]
        ]

    def is_subscribe(self, message: Any) -> bool:
        return bool(message.get("method") == "subscribe")

    def trade_messages(self, trades: list[TapeTrade]) -> list[str]:
        rows = [
            {
                "symbol": t.symbol,
                "side": "buy" if t.taker_buys else "sell",
                "price": float(t.price),
                "qty": float(t.size),
                "ord_type": "market",
                "trade_id": int(t.trade_id),
                "timestamp": _rfc3339(t.ts),
            }
            for t in trades
        ]
        return [orjson.dumps({"channel": "trade", "type": "update", "data": rows}).decode()]

    def rest_answer(self, query: Mapping[str, str], tape: list[TapeTrade]) -> Any:
        since_ns, count = int(query["since"]), int(query.get("count", "1000"))
        rows = sorted(
            (
                t
                for t in tape
                if _kraken_rest_pair(t.pair) == query["pair"] and t.ts * 1_000_000 > since_ns
            ),
            key=lambda t: int(t.trade_id),
        )[:count]
        return {
            "error": [],
            "result": {
                "X" + query["pair"]: [
                    [
                        t.price,
                        t.size,
                        t.ts / 1000,
                        "b" if t.taker_buys else "s",
                        "m",
                        "",
                        int(t.trade_id),
                    ]
                    for t in rows
                ],
                "last": str(rows[-1].ts * 1_000_000 if rows else since_ns),
            },
        }


class OkxWire(Wire):
    exchange = "okx"
    ws_path = "/ws/v5/business"
    ws_base_suffix = "/ws/v5/business"
    rest_path = "/api/v5/market/history-trades"

    def native_symbol(self, symbol: str) -> str:
        return symbol

    def decode(self, text: str) -> Any:
        return text if text == "ping" else orjson.loads(text)

    def replies(self, message: Any) -> list[str]:
        if message == "ping":
            return ["pong"]
        if message.get("op") != "subscribe":
            return []
        return [
            orjson.dumps({"event": "subscribe", "arg": arg, "connId": "fake"}).decode()
            for arg in message["args"]
        ]

    def is_subscribe(self, message: Any) -> bool:
        return isinstance(message, dict) and message.get("op") == "subscribe"

    def trade_messages(self, trades: list[TapeTrade]) -> list[str]:
        return [  # trades-all: one trade per push
            orjson.dumps(
                {
                    "arg": {"channel": "trades-all", "instId": t.symbol},
                    "data": [_okx_row(t)],
                }
            ).decode()
            for t in trades
        ]

    def rest_answer(self, query: Mapping[str, str], tape: list[TapeTrade]) -> Any:
        before_id, limit = int(query["after"]), min(100, int(query.get("limit", "100")))
        rows = sorted(
            (t for t in tape if t.symbol == query["instId"] and int(t.trade_id) < before_id),
            key=lambda t: int(t.trade_id),
            reverse=True,  # newest first
        )[:limit]
        return {"code": "0", "msg": "", "data": [_okx_row(t) for t in rows]}


WIRES: dict[str, type[Wire]] = {
    wire.exchange: wire for wire in (BinanceWire, BybitWire, CoinbaseWire, KrakenWire, OkxWire)
}


@dataclass
class _Socket:
    socket: web.WebSocketResponse
    request: web.Request


@dataclass
class FakeExchangeServer:
    """One fake exchange on a free 127.0.0.1 port (`async with` starts and stops it)."""

    wire: Wire
    tape: list[TapeTrade] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)  # messages clients sent
    close_codes: list[int | None] = field(default_factory=list)  # per finished socket
    rest_calls: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    connections: int = 0
    subscriptions: int = 0
    silent: bool = False
    throttle_next: int = 0
    retry_after: str = "1"

    def __post_init__(self) -> None:
        self._open: list[_Socket] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._ids: dict[str, itertools.count[int]] = {}
        self._clock = itertools.count(1_767_225_600_000, 7)
        self.port = 0

    async def __aenter__(self) -> FakeExchangeServer:
        app = web.Application()
        app.router.add_get(self.wire.ws_path, self._websocket)
        app.router.add_get(self.wire.rest_path, self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def ws_url(self) -> str:
        """What the adapter's `ws_url` setting should be."""
        return f"ws://127.0.0.1:{self.port}{self.wire.ws_base_suffix}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- the tape ----------------------------------------------------------------

    def make_trades(self, symbols: list[str], count: int) -> list[TapeTrade]:
        """`count` new trades round-robin over `symbols` (BASE-QUOTE), not yet on the tape."""
        trades = []
        for n in range(count):
            native = self.wire.native_symbol(symbols[n % len(symbols)])
            ids = self.wire.trade_ids()
            if ids is None:
                trade_id = str(uuid.uuid4())
            else:
                trade_id = str(next(self._ids.setdefault(native, ids)))
            trades.append(
                TapeTrade(
                    native,
                    trade_id,
                    price=f"{100 + n % 17}.{n % 100:02d}",
                    size=f"0.{n % 9 + 1}",
                    taker_buys=n % 3 != 0,
                    ts=next(self._clock),
                    pair=symbols[n % len(symbols)],
                )
            )
        return trades

    def happen(self, trades: list[TapeTrade]) -> None:
        """Trades that happened on the exchange but nobody received."""
        self.tape.extend(trades)

    async def publish(self, trades: list[TapeTrade], *, replay: bool = False) -> None:
        """Trades that happened and are sent to every open socket (`replay`: sent again)."""
        if not replay:
            self.tape.extend(trades)
        for message in self.wire.trade_messages(trades):
            await self.send_raw(message)

    async def send_raw(self, message: str | bytes) -> None:
        for connection in list(self._open):
            if isinstance(message, bytes):
                await connection.socket.send_bytes(message)
            else:
                await connection.socket.send_str(message)

    async def drop(self) -> None:
        """Cut every connection without a close handshake (a network failure)."""
        for connection in list(self._open):
            transport = connection.request.transport
            if transport is not None:
                transport.abort()

    @property
    def rest_answers(self) -> int:
        """REST calls answered with data (not throttled)."""
        return sum(1 for status, _ in self.rest_calls if status == 200)

    async def wait_for(self, what: str, at_least: int, timeout: float = 20.0) -> None:
        """Wait until `connections`, `subscriptions` or `rest_answers` reaches `at_least`."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: getattr(self, what) >= at_least)

    # ---- handlers ------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        connection = _Socket(socket, request)
        self._open.append(connection)
        self.connections += 1
        await self._notify()
        try:
            for greeting in self.wire.greeting():
                await socket.send_str(greeting)
            async for frame in socket:
                if frame.type != WSMsgType.TEXT:
                    continue
                message = self.wire.decode(frame.data)
                self.received.append(message)
                if self.silent:
                    continue
                for reply in self.wire.replies(message):
                    await socket.send_str(reply)
                if self.wire.is_subscribe(message):
                    self.subscriptions += 1
                    await self._notify()
        finally:
            self._open.remove(connection)
            self.close_codes.append(socket.close_code)
            await self._notify()
        return socket

    async def _rest(self, request: web.Request) -> web.Response:
        query = {**request.query, **request.match_info}  # path parameters too (Coinbase)
        if self.throttle_next > 0:
            self.throttle_next -= 1
            self.rest_calls.append((429, query))
            await self._notify()
            return web.json_response(
                {"code": -1003, "msg": "Too many requests"},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        answer = web.json_response(self.wire.rest_answer(query, self.tape), dumps=_dumps)
        self.rest_calls.append((200, query))
        await self._notify()
        return answer


def _okx_row(t: TapeTrade) -> dict[str, str]:
    return {
        "instId": t.symbol,
        "tradeId": t.trade_id,
        "px": t.price,
        "sz": t.size,
        "side": "buy" if t.taker_buys else "sell",
        "source": "0",
        "ts": str(t.ts),
    }


def _kraken_rest_pair(pair: str) -> str:
    """`BTC-USDT` → `XBTUSDT`, as Kraken's REST API names pairs."""
    return pair.replace("BTC", "XBT").replace("-", "")


def _rfc3339(ms: int) -> str:
    """Epoch ms as the RFC 3339 text with nanoseconds that Coinbase and Kraken send."""
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{ms % 1000:03d}{ms % 7:06d}Z"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
