"""Live parts of the API on real Kafka and the ClickHouse engine: prices from the topic
feed and the warehouse, symbols, pagination, the WS/SSE stream, CORS, request ids,
access logs and metrics. The stream tests run the app under a real uvicorn server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.server import server_config
from ingest.producer import EventProducer
from schemas.codec import codec_for
from schemas.events import Candle, Signal, Trade
from sigflow.roles import migrate
from sigflow.settings import Settings
from sigflow.stack.process import free_port
from sinks.warehouse import connect
from tests.integration.test_api import assert_error, candle, new_api_key, serve, settings_for

pytestmark = pytest.mark.integration

TRADE = codec_for(Trade)
SIGNAL = codec_for(Signal)
T0 = 1_717_999_200_000


def trade(exchange: str, symbol: str, price: float, ts: int, n: int = 0) -> Any:
    return TRADE.build(
        exchange=exchange,
        symbol=symbol,
        trade_id=f"{ts}-{n}",
        price=price,
        size=0.5,
        side="sell",
        ts=ts,
        received_ts=ts + 1,
    )


def signal(symbol: str, minute: int, explanation: str = "why") -> Any:
    return SIGNAL.build(
        exchange="binance",
        symbol=symbol,
        interval="1m",
        open_time=T0 + minute * 60_000,
        rule="ema_cross_12_26",
        direction=1,
        strength=0.5,
        price=100.0,
        explanation=explanation,
    )


@pytest.fixture(scope="module")
async def live_settings(kafka_bootstrap: str, clickhouse_url: str) -> Settings:
    """Own database and topic prefix, migrated, with candles and warehouse-only trades."""
    settings = settings_for(kafka_bootstrap, clickhouse_url, f"live{uuid.uuid4().hex[:8]}")
    await migrate(settings)
    client = await connect(settings)
    try:
        candles = [
            candle("binance", "ETH-USDT", "1m", 0, 3_500.0),
            candle("binance", "ETH-USDT", "1m", 4, 3_510.0),
            candle("coinbase", "BTC-USD", "1m", 2, 60_000.0),
            candle("kraken", "BTC-USD", "1m", 1, 60_010.0),
        ]
        columns = list(Candle.model_fields)
        await client.insert(
            "candles", [[getattr(c, n) for n in columns] for c in candles], column_names=columns
        )
        # Only in the warehouse: the cold-start fallback must find its newest trade.
        old = [trade("bitstamp", "LTC-USD", p, T0 + i) for i, p in enumerate((70.0, 71.5))]
        trade_columns = list(Trade.model_fields)
        await client.insert(
            "trades",
            [[getattr(t, n) for n in trade_columns] for t in old],
            column_names=trade_columns,
        )
    finally:
        await client.close()
    return settings


@pytest.fixture(scope="module")
async def key(live_settings: Settings) -> str:
    return await new_api_key(live_settings, "live")


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def publish(settings: Settings, topic: str, events: list[tuple[bytes, bytes]]) -> None:
    async with EventProducer(settings, component="test") as producer:
        for key, value in events:
            await producer.send(settings.topic(topic), key, value, "test")
        await producer.flush()


async def wait_ready(http: httpx.AsyncClient) -> None:
    async def ready() -> bool:
        return (await http.get("/readyz")).json()["checks"]["stream"] is True

    await poll(ready, "the topic feed")


# ---- prices and symbols ------------------------------------------------------------


async def test_latest_prices_come_from_the_trades_topic_and_the_warehouse(
    live_settings: Settings, key: str
) -> None:
    trades = [
        trade("coinbase", "BTC-USD", 60_000.0, T0 + 1_000),
        trade("coinbase", "BTC-USD", 60_100.0, T0 + 2_000),  # last of coinbase
        trade("kraken", "BTC-USD", 60_050.0, T0 + 1_500),
        trade("binance", "BTC-USD", 60_300.0, T0 + 1_800),
        trade("binance", "ETH-USDT", 3_500.0, T0 + 1_900),
    ]
    async with serve(live_settings, key) as http:
        await wait_ready(http)
        await publish(
            live_settings,
            "trades",
            [(f"{t.exchange}:{t.symbol}".encode(), TRADE.encode(t)) for t in trades],
        )

        async def all_seen() -> bool:
            prices = (await http.get("/v1/prices/latest")).json()
            return sum(len(p["exchanges"]) for p in prices) == 5

        await poll(all_seen, "five exchange/symbol prices")
        everything = (await http.get("/v1/prices/latest")).json()
        only = (await http.get("/v1/prices/latest", params={"symbols": "BTC-USD,XRP-USD"})).json()
        one_exchange = (await http.get("/v1/prices/latest", params={"exchange": "kraken"})).json()
        bad = await http.get("/v1/prices/latest", params={"symbols": "BTC-USD,btcusd"})
    assert [p["symbol"] for p in everything] == ["BTC-USD", "ETH-USDT", "LTC-USD"]
    btc = everything[0]
    assert btc["price"] == statistics.median([60_100.0, 60_050.0, 60_300.0])
    assert btc["ts"] == T0 + 2_000
    assert {e["exchange"]: e["price"] for e in btc["exchanges"]} == {
        "binance": 60_300.0,
        "coinbase": 60_100.0,
        "kraken": 60_050.0,
    }
    assert all(e["source"] == "stream" and e["age_ms"] > 0 for e in btc["exchanges"])
    ltc = everything[2]["exchanges"]
    assert [(e["exchange"], e["price"], e["source"]) for e in ltc] == [
        ("bitstamp", 71.5, "warehouse")
    ]
    assert [p["symbol"] for p in only] == ["BTC-USD"]
    assert [(p["symbol"], p["price"]) for p in one_exchange] == [("BTC-USD", 60_050.0)]
    assert_error(bad, 422, "invalid_symbol", "'btcusd'")


async def test_symbols_list_pairs_with_first_and_last_seen_and_pages_by_cursor(
    live_settings: Settings, key: str
) -> None:
    async with serve(live_settings, key) as http:

        async def warmed() -> bool:  # the cold-start load runs in the background
            return bool((await http.get("/v1/prices/latest?symbols=LTC-USD")).json())

        await poll(warmed, "the price book warmed from the warehouse")
        everything: list[dict[str, object]] = []
        pages: list[list[dict[str, object]]] = []

        async def paged_like_the_whole() -> bool:
            """Page through; the warehouse load and the topic feed may still add pairs
            meanwhile, so compare with the whole list read before and after."""
            nonlocal everything, pages
            before = (await http.get("/v1/symbols")).json()
            pages, cursor = [], None
            while True:
                params = {"limit": 2, "cursor": cursor} if cursor else {"limit": 2}
                response = await http.get("/v1/symbols", params=params)
                pages.append(response.json())
                cursor = response.headers.get("X-Next-Cursor")
                if cursor is None:
                    break
            everything = (await http.get("/v1/symbols")).json()
            return before == everything == [s for page in pages for s in page]

        await poll(paged_like_the_whole, "pages equal to the whole symbol list")
        forged = await http.get("/v1/symbols", params={"cursor": "eyJ4IjoxfQ"})
    pairs = [(s["exchange"], s["symbol"]) for s in everything]
    assert pairs == sorted(pairs)
    assert {
        ("binance", "ETH-USDT"),
        ("coinbase", "BTC-USD"),
        ("kraken", "BTC-USD"),
        ("bitstamp", "LTC-USD"),  # trades only: seen by the price book
    } <= set(pairs)
    eth = next(s for s in everything if s["symbol"] == "ETH-USDT" and s["exchange"] == "binance")
    assert eth["first_seen"] == candle("binance", "ETH-USDT", "1m", 0, 100.0).open_time
    assert eth["last_seen"] >= candle("binance", "ETH-USDT", "1m", 4, 100.0).close_time
    assert [s for page in pages for s in page] == everything
    assert all(len(page) <= 2 for page in pages)
    assert_error(forged, 422, "invalid_cursor")


async def test_signal_pages_follow_the_cursor_without_gaps_or_repeats(
    live_settings: Settings, key: str
) -> None:
    rows = [signal(symbol, minute) for minute in range(4) for symbol in ("BTC-USD", "ETH-USD")]
    client = await connect(live_settings)
    try:
        columns = list(Signal.model_fields)
        await client.insert(
            "signals", [[getattr(s, n) for n in columns] for s in rows], column_names=columns
        )
    finally:
        await client.close()
    async with serve(live_settings, key) as http:
        whole = (await http.get("/v1/signals", params={"limit": 100})).json()
        walked, params = [], {"limit": 3}
        while True:
            response = await http.get("/v1/signals", params=params)
            walked += response.json()
            if "X-Next-Cursor" not in response.headers:
                break
            params = {"limit": 3, "cursor": response.headers["X-Next-Cursor"]}
        candles = await http.get(
            "/v1/candles", params={"exchange": "binance", "symbol": "ETH-USDT", "limit": 1}
        )
        second = await http.get(
            "/v1/candles",
            params={
                "exchange": "binance",
                "symbol": "ETH-USDT",
                "limit": 1,
                "cursor": candles.headers["X-Next-Cursor"],
            },
        )
    assert len(whole) == len(rows) and walked == whole
    first_page, second_page = candles.json(), second.json()
    assert [c["open_time"] for c in first_page + second_page] == [
        candle("binance", "ETH-USDT", "1m", minute, 100.0).open_time for minute in (0, 4)
    ]


# ---- the live stream under a real server ------------------------------------------


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[str]:
    """The app under uvicorn on a free port; yields its base URL once it serves."""
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(server_config(app, "127.0.0.1", port))
    task = asyncio.create_task(server.serve())
    try:
        await poll(lambda: asyncio.sleep(0, server.started), "uvicorn to start")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_ready(http)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def next_message(ws: Any, timeout: float = 15) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_websocket_delivers_only_the_subscribed_topic_and_symbol(
    live_settings: Settings, key: str
) -> None:
    async with running(live_settings) as address:
        url = f"ws://{address}/v1/stream?topics=signals&symbols=BTC-USD&api_key={key}"
        async with ws_connect(url) as ws:
            assert await next_message(ws) == {
                "topic": "subscribed",
                "data": {"topics": ["signals"], "symbols": ["BTC-USD"]},
            }
            await publish(
                live_settings,
                "signals",
                [
                    (b"binance:ETH-USD", SIGNAL.encode(signal("ETH-USD", 10, "eth"))),
                    (b"binance:BTC-USD", SIGNAL.encode(signal("BTC-USD", 10, "btc"))),
                ],
            )
            first = await next_message(ws)
            await ws.send(
                orjson.dumps({"action": "subscribe", "topics": ["signals"], "symbols": ["ETH-USD"]})
            )
            assert (await next_message(ws))["data"]["symbols"] == ["ETH-USD"]
            await publish(
                live_settings,
                "signals",
                [
                    (b"binance:BTC-USD", SIGNAL.encode(signal("BTC-USD", 11, "btc2"))),
                    (b"binance:ETH-USD", SIGNAL.encode(signal("ETH-USD", 11, "eth2"))),
                ],
            )
            second = await next_message(ws)
            await ws.send(b"{nope")
            error = await next_message(ws)
    assert first["topic"] == "signals" and first["data"]["explanation"] == "btc"
    assert second["data"]["explanation"] == "eth2"
    assert error["topic"] == "error" and error["data"]["code"] == "invalid_json"


async def test_websocket_without_a_key_is_closed_with_4401(live_settings: Settings) -> None:
    async with running(live_settings) as address, ws_connect(f"ws://{address}/v1/stream") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        4401,
        "send an API key in the X-API-Key header",
    )


async def test_sse_streams_events_and_a_snapshot_and_refuses_a_bad_topic(
    live_settings: Settings, key: str
) -> None:
    async with running(live_settings) as address:
        base = f"http://{address}"
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            bad = await http.get("/v1/stream/sse", params={"topics": "gossip", "api_key": key})
            anonymous = await http.get("/v1/stream/sse")
            params = {"topics": "prices,signals", "symbols": "LTC-USD", "snapshot": "true"}
            async with http.stream(
                "GET", "/v1/stream/sse", params=params, headers={"X-API-Key": key}
            ) as response:
                lines = response.aiter_lines()
                events = []
                async for line in lines:
                    if line.startswith("event: "):
                        events.append(line.removeprefix("event: "))
                    if line.startswith("data: ") and events[-1] == "prices":
                        data = orjson.loads(line.removeprefix("data: "))["data"]
                        break
    assert_error(bad, 422, "invalid_topic", "gossip", "prices")
    assert_error(anonymous, 401, "missing_api_key")
    assert events == ["subscribed", "prices"]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert (data["exchange"], data["symbol"], data["price"]) == ("bitstamp", "LTC-USD", 71.5)


async def test_a_client_that_stops_reading_is_dropped_and_a_reader_gets_everything(
    live_settings: Settings, key: str
) -> None:
    small = live_settings.model_copy(update={"api_stream_queue_size": 200})
    count, padding = 1_500, "x" * 8_000  # ~12 MB: more than the socket buffers hold
    async with running(small) as address:
        path = f"/v1/stream?topics=signals&api_key={key}"
        # The slow client: a bare socket that does the WebSocket handshake, then reads
        # nothing, with a small fixed receive buffer (no autotuning up to 32 MB).
        slow_socket = socket.socket()
        slow_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        host, port = address.split(":")
        slow_socket.connect((host, int(port)))
        slow_reader, slow_writer = await asyncio.open_connection(sock=slow_socket)
        slow_writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert b" 101 " in await slow_reader.readuntil(b"\r\n\r\n")
        async with ws_connect(f"ws://{address}{path}", max_size=None) as fast:
            await next_message(fast)
            received: list[str] = []

            async def read_all() -> None:
                while len(received) < count:
                    explanation = (await next_message(fast, timeout=60))["data"]["explanation"]
                    if explanation.endswith(padding):  # not an older test's replayed signal
                        received.append(explanation)

            reader = asyncio.create_task(read_all())
            # A steady flow a reading client keeps up with (50 events per 50 ms).
            async with EventProducer(small, component="test") as producer:
                for i in range(count):
                    value = SIGNAL.encode(signal("BTC-USD", 100 + i, f"{i} {padding}"))
                    await producer.send(small.topic("signals"), b"binance:BTC-USD", value, "test")
                    if i % 50 == 49:
                        await producer.flush()
                        await asyncio.sleep(0.05)
                await producer.flush()
            await asyncio.wait_for(reader, 90)
        # Now the slow client reads what was buffered for it, then its close frame.
        slow_bytes = await asyncio.wait_for(slow_reader.read(), 60)
        slow_writer.close()
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            metrics = (await http.get("/metrics/")).text
    assert [int(text.split()[0]) for text in received] == list(range(count))
    assert (4008).to_bytes(2, "big") + b"slow client: 200 events were waiting" in slow_bytes
    assert slow_bytes.count(b'"topic":"signals"') < count  # it never got them all
    assert 'sigflow_api_stream_dropped_total{reason="slow_client"}' in metrics


# ---- production concerns -----------------------------------------------------------


async def test_cors_allows_only_configured_origins(live_settings: Settings, key: str) -> None:
    allowed = "https://dash.example.com"
    cors = live_settings.model_copy(update={"api_cors_origins": [allowed]})
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-api-key",
    }
    async with serve(cors, key) as http:
        ok = await http.options("/v1/prices/latest", headers={"Origin": allowed, **preflight})
        other = await http.options(
            "/v1/prices/latest", headers={"Origin": "https://evil.example", **preflight}
        )
        simple = await http.get("/v1/prices/latest", headers={"Origin": allowed})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == allowed
    assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in other.headers
    assert simple.headers["access-control-allow-origin"] == allowed
    assert "X-Request-ID" in simple.headers["access-control-expose-headers"]


async def test_request_ids_are_echoed_or_made_and_logged_with_the_key_id_not_the_key(
    live_settings: Settings, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(live_settings, key) as http:
        with caplog.at_level(logging.INFO, logger="sigflow.api.access"):
            given = await http.get("/v1/prices/latest", headers={"X-Request-ID": "abc-123"})
            made = await http.get("/v1/prices/latest")
            hostile = await http.get("/v1/prices/latest", headers={"X-Request-ID": "a\tb" * 100})
        wrong_method = await http.post("/v1/prices/latest")
        metrics = (await http.get("/metrics/")).text
    assert given.headers["X-Request-ID"] == "abc-123"
    assert len(made.headers["X-Request-ID"]) == 32
    assert hostile.headers["X-Request-ID"] != "a\tb" * 100
    access = [r for r in caplog.records if r.name == "sigflow.api.access"]
    entry = next(r for r in access if getattr(r, "request_id", None) == "abc-123")
    assert (entry.method, entry.path, entry.route, entry.status) == (  # type: ignore[attr-defined]
        "GET",
        "/v1/prices/latest",
        "/v1/prices/latest",
        200,
    )
    assert entry.key_id == key.split("_")[1]  # type: ignore[attr-defined]
    assert entry.duration_ms >= 0  # type: ignore[attr-defined]
    assert all(key not in str(vars(r)) for r in access)
    assert_error(wrong_method, 405, "method_not_allowed", "Method Not Allowed")
    assert (
        'sigflow_api_requests_total{method="GET",route="/v1/prices/latest",status="200"}' in metrics
    )
    assert "sigflow_api_request_seconds_bucket" in metrics
    assert "sigflow_api_stream_clients" in metrics


async def test_dashboard_page_and_vendored_chart_library_are_served(
    live_settings: Settings,
) -> None:
    async with serve(live_settings) as http:
        page = await http.get("/")
        library = await http.get("/static/vendor/lightweight-charts.standalone.production.js")
        docs = await http.get("/docs")
    assert page.status_code == 200 and "<title>sigflow: live</title>" in page.text
    assert "/static/vendor/lightweight-charts.standalone.production.js" in page.text
    assert library.status_code == 200 and "Lightweight Charts" in library.text[:300]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
