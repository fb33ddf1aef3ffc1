"""The HTTP API against the real ClickHouse engine: candles, indicators, signals, health.

Candles are written straight into the migrated tables, so every expectation here is a
row this module inserted itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.keys import ApiKeyStore
from schemas.events import Candle, Signal
from sigflow.roles import migrate
from sigflow.settings import Settings
from sigflow.stack.process import free_port
from sinks.warehouse import connect

pytestmark = pytest.mark.integration

MINUTE = 60_000
T0 = int(datetime(2024, 6, 10, 6, 0, tzinfo=UTC).timestamp() * 1000)
COLUMNS = list(Candle.model_fields)


def candle(
    exchange: str, symbol: str, interval: str, minute: int, price: float, **changes: Any
) -> Candle:
    length = {"1m": MINUTE, "5m": 5 * MINUTE}[interval]
    open_time = T0 + minute * MINUTE
    values: dict[str, Any] = {
        "exchange": exchange,
        "symbol": symbol,
        "interval": interval,
        "open_time": open_time,
        "close_time": open_time + length,
        "open": price,
        "high": price + 10,
        "low": price - 5,
        "close": price + 2,
        "volume": 1.5,
        "quote_volume": 1.5 * price,
        "vwap": price + 1,
        "trade_count": 3,
        "buy_volume": 1.0,
        "sell_volume": 0.5,
        "final": True,
    }
    return Candle(**{**values, **changes})


BTC_0 = candle("binance", "BTC-USDT", "1m", 0, 60_000.0)
BTC_1_FIRST = candle("binance", "BTC-USDT", "1m", 1, 60_100.0, final=False, trade_count=1)
BTC_1 = candle("binance", "BTC-USDT", "1m", 1, 60_110.0)  # same natural key, written later
BTC_2 = candle("binance", "BTC-USDT", "1m", 2, 60_200.0)
ETH_0 = candle("binance", "ETH-USDT", "1m", 0, 3_500.0)
BTC_5M = candle("binance", "BTC-USDT", "5m", 0, 60_050.0)
COINBASE_BTC_0 = candle("coinbase", "BTC-USDT", "1m", 0, 60_001.0)
BTC_1M = [BTC_0, BTC_1, BTC_2]
BTC_QUERY = {"exchange": "binance", "symbol": "BTC-USDT", "interval": "1m"}


def settings_for(kafka_bootstrap: str, clickhouse_url: str, database: str) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        clickhouse_url=clickhouse_url,
        clickhouse_database=database,
        topic_prefix=f"{database}.",
        log_json=False,
    )


@pytest.fixture(scope="module")
async def settings(kafka_bootstrap: str, clickhouse_url: str) -> Settings:
    """A migrated database holding the candles above (one key written twice)."""
    settings = settings_for(kafka_bootstrap, clickhouse_url, f"api{uuid.uuid4().hex[:8]}")
    await migrate(settings)
    client = await connect(settings)
    try:
        # Two inserts, two parts: FINAL must fold BTC_1_FIRST into BTC_1.
        for batch in (
            [BTC_2, BTC_1_FIRST, ETH_0, BTC_5M, COINBASE_BTC_0],
            [BTC_1, BTC_0],
        ):
            rows = [[getattr(c, name) for name in COLUMNS] for c in batch]
            await client.insert("candles", rows, column_names=COLUMNS)
    finally:
        await client.close()
    return settings


async def new_api_key(settings: Settings, name: str = "tests") -> str:
    client = await connect(settings)
    try:
        return (await ApiKeyStore(client, settings.clickhouse_database).create(name)).token
    finally:
        await client.close()


@asynccontextmanager
async def serve(settings: Settings, api_key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process with its lifespan (topic feed, warehouse); requests carry
    `api_key` when one is given."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    headers = {"X-API-Key": api_key} if api_key else {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as http,
    ):
        yield http


@pytest.fixture(scope="module")
async def api_key(settings: Settings) -> str:
    return await new_api_key(settings)


@pytest.fixture(scope="module")
async def api(settings: Settings, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings, api_key) as http:
        yield http


async def get_candles(api: httpx.AsyncClient, **params: Any) -> list[Candle]:
    response = await api.get("/v1/candles", params=params)
    assert response.status_code == 200, response.text
    return [Candle(**item) for item in response.json()]


def assert_error(response: httpx.Response, status: int, code: str, *message_parts: str) -> None:
    """The one error shape, with a message that names what was wrong."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["details"], list)
    for part in message_parts:
        assert part in body["error"]["message"]


# ---- reading candles ---------------------------------------------------------------


async def test_candles_come_back_with_their_exact_values_in_time_order(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/v1/candles", params=BTC_QUERY)
    assert response.status_code == 200
    assert response.json() == [c.model_dump() for c in BTC_1M]


async def test_final_returns_only_the_latest_row_of_a_key_written_twice(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    client = await connect(settings)
    try:
        stored = await client.query(
            "SELECT count() FROM candles WHERE symbol = 'BTC-USDT' AND interval = '1m' "
            "AND open_time = fromUnixTimestamp64Milli({t:Int64})",
            parameters={"t": BTC_1.open_time},
        )
    finally:
        await client.close()
    assert stored.first_row == (2,)  # both versions are on disk, unmerged
    returned = await get_candles(api, **BTC_QUERY, start=BTC_1.open_time, limit=1)
    assert returned == [BTC_1]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"exchange": "binance", "symbol": "ETH-USDT"}, [ETH_0]),
        ({"exchange": "coinbase", "symbol": "BTC-USDT"}, [COINBASE_BTC_0]),
        ({"exchange": "binance", "symbol": "BTC-USDT", "interval": "5m"}, [BTC_5M]),
        ({"exchange": "binance", "symbol": "BTC-USDT", "interval": "1h"}, []),
        ({"exchange": "kraken", "symbol": "BTC-USDT"}, []),
    ],
    ids=["symbol", "exchange", "interval", "interval-without-candles", "exchange-without-candles"],
)
async def test_exchange_symbol_and_interval_select_only_their_candles(
    api: httpx.AsyncClient, query: dict[str, str], expected: list[Candle]
) -> None:
    assert await get_candles(api, **query) == expected


async def test_interval_defaults_to_one_minute(api: httpx.AsyncClient) -> None:
    assert await get_candles(api, exchange="binance", symbol="BTC-USDT") == BTC_1M


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (str(BTC_1.open_time), str(BTC_2.open_time)),
        ("2024-06-10T06:01:00Z", "2024-06-10T06:02:00Z"),
        ("2024-06-10T08:01:00+02:00", "2024-06-10T01:02:00-05:00"),
        ("2024-06-10T06:01:00", "2024-06-10T06:02:00.000"),
    ],
    ids=["epoch-ms", "iso-z", "iso-offset", "iso-naive-is-utc"],
)
async def test_start_is_inclusive_and_end_exclusive_in_every_time_format(
    api: httpx.AsyncClient, start: str, end: str
) -> None:
    assert await get_candles(api, **BTC_QUERY, start=start, end=end) == [BTC_1]


async def test_iso_time_keeps_its_milliseconds(api: httpx.AsyncClient) -> None:
    assert await get_candles(api, **BTC_QUERY, start="2024-06-10T06:01:00.001Z") == [BTC_2]


async def test_end_one_millisecond_after_an_open_time_includes_that_candle(
    api: httpx.AsyncClient,
) -> None:
    candles = await get_candles(api, **BTC_QUERY, start=BTC_1.open_time, end=BTC_2.open_time + 1)
    assert candles == [BTC_1, BTC_2]


@pytest.mark.parametrize(("limit", "expected"), [(1, [BTC_0]), (2, [BTC_0, BTC_1])])
async def test_limit_keeps_the_earliest_candles(
    api: httpx.AsyncClient, limit: int, expected: list[Candle]
) -> None:
    assert await get_candles(api, **BTC_QUERY, limit=limit) == expected


# ---- rejected requests -------------------------------------------------------------

INJECTION = "' OR 1=1; DROP TABLE candles; --"


@pytest.mark.parametrize(
    ("params", "code", "message_parts"),
    [
        ({"symbol": "BTCUSD"}, "invalid_request", ["query.symbol", "pattern"]),
        ({"symbol": f"BTC-USDT{INJECTION}"}, "invalid_request", ["query.symbol"]),
        ({"exchange": f"binance{INJECTION}"}, "invalid_request", ["query.exchange"]),
        ({"interval": "7x"}, "invalid_interval", ["'7x'", "1m"]),
        ({"interval": f"1m{INJECTION}"}, "invalid_interval", ["unknown candle interval"]),
        ({"start": "yesterday"}, "invalid_time", ["start", "'yesterday'", "ISO-8601"]),
        ({"end": "yesterday"}, "invalid_time", ["end", "'yesterday'"]),
        ({"start": "²"}, "invalid_time", ["start", "'²'"]),
        ({"start": "--5"}, "invalid_time", ["start", "'--5'"]),
        ({"start": str(2**64 + T0)}, "invalid_time", ["start", "outside the years 1..9999"]),
        ({"start": T0, "end": T0}, "invalid_range", ["end must be after start"]),
        ({"start": "2024-06-10T06:01:00Z", "end": T0}, "invalid_range", ["end", "start"]),
        ({"limit": 0}, "invalid_request", ["query.limit", "1"]),
        ({"limit": 10_001}, "invalid_request", ["query.limit", "10000"]),
        ({"exchange": None}, "invalid_request", ["query.exchange", "required"]),
        ({"symbol": None}, "invalid_request", ["query.symbol", "required"]),
    ],
    ids=[
        "symbol-without-separator",
        "symbol-sql-injection",
        "exchange-sql-injection",
        "unknown-interval",
        "interval-with-quote",
        "start-not-a-time",
        "end-not-a-time",
        "start-superscript-digit",
        "start-double-minus",
        "start-beyond-int64",
        "end-equals-start",
        "end-before-start",
        "limit-zero",
        "limit-too-large",
        "exchange-missing",
        "symbol-missing",
    ],
)
async def test_invalid_candle_request_is_a_422_in_the_error_shape(
    api: httpx.AsyncClient, params: dict[str, Any], code: str, message_parts: list[str]
) -> None:
    query = {k: v for k, v in {**BTC_QUERY, **params}.items() if v is not None}
    assert_error(await api.get("/v1/candles", params=query), 422, code, *message_parts)


async def test_missing_parameters_are_each_listed_in_details(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/candles")
    assert_error(response, 422, "invalid_request", "required")
    locations = [d["location"] for d in response.json()["error"]["details"]]
    assert locations == ["query.exchange", "query.symbol"]


async def test_unknown_path_is_a_404_in_the_error_shape(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/v1/nothing-here"), 404, "not_found", "Not Found")


async def test_rejected_injection_left_the_candles_table_intact(api: httpx.AsyncClient) -> None:
    await api.get("/v1/candles", params={**BTC_QUERY, "symbol": f"BTC-USDT{INJECTION}"})
    assert await get_candles(api, **BTC_QUERY) == BTC_1M


# ---- health and contract -----------------------------------------------------------


async def test_healthz_answers_ok(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_is_ready_when_kafka_clickhouse_and_the_stream_feed_are(
    api: httpx.AsyncClient,
) -> None:
    deadline = time.monotonic() + 30
    while (response := await api.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, response.text  # the feed connects in the background
        await asyncio.sleep(0.2)
    assert response.json() == {
        "status": "ready",
        "checks": {"kafka": True, "stream": True, "clickhouse": True},
        "stream_lag": 0,
    }


@pytest.mark.parametrize(
    "down",
    [{"clickhouse"}, {"kafka"}, {"kafka", "clickhouse"}],
    ids=["clickhouse", "kafka", "both"],
)
async def test_readyz_is_503_naming_each_service_that_does_not_answer(
    kafka_bootstrap: str, clickhouse_url: str, down: set[str]
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    settings = settings_for(
        closed if "kafka" in down else kafka_bootstrap,
        f"http://{closed}" if "clickhouse" in down else clickhouse_url,
        "default",
    )
    async with serve(settings) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert response.json()["status"] == "not_ready"
    assert checks["kafka"] is ("kafka" not in down)
    assert checks["clickhouse"] is ("clickhouse" not in down)
    if "kafka" in down:
        assert checks["stream"] is False  # no feed without a broker


async def test_openapi_documents_the_candles_route_and_its_error_shape(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    operation = response.json()["paths"]["/v1/candles"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {
        "exchange",
        "symbol",
        "interval",
        "start",
        "end",
        "limit",
        "cursor",
    }
    assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorPublic"
    }


async def test_metrics_endpoint_serves_prometheus_text(api: httpx.AsyncClient) -> None:
    response = await api.get("/metrics/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "python_info" in response.text


async def test_indicators_group_per_candle_and_filter_by_name(
    settings: Settings, api_key: str
) -> None:
    client = await connect(settings)
    rows = [
        ("coinbase", "BTC-USD", "1m", 1_700_000_040_000 + minute * 60_000, name, value + minute)
        for minute in range(3)
        for name, value in (("vwap", 100.0), ("sma_20", 99.0), ("rsi_14", 55.0))
    ]
    try:
        await client.insert(
            f"{settings.clickhouse_database}.indicators",
            rows,
            column_names=["exchange", "symbol", "interval", "open_time", "name", "value"],
        )
    finally:
        await client.close()
    async with serve(settings, api_key) as http:
        series = {"exchange": "coinbase", "symbol": "BTC-USD", "interval": "1m"}
        everything = (await http.get("/v1/indicators", params=series)).json()
        only = (
            await http.get("/v1/indicators", params={**series, "name": ["rsi_14", "vwap"]})
        ).json()
        unknown = await http.get("/v1/indicators", params={**series, "name": "sma_21"})
    assert [point["open_time"] for point in everything] == [r[3] for r in rows[::3]]
    assert everything[1]["values"] == {"sma_20": 100.0, "rsi_14": 56.0, "vwap": 101.0}
    assert list(everything[1]["values"]) == ["sma_20", "rsi_14", "vwap"]  # canonical order
    assert all(set(point["values"]) == {"rsi_14", "vwap"} for point in only)
    assert_error(unknown, 422, "invalid_indicator", "sma_21")


async def test_signals_come_newest_first_and_filter_by_symbol_rule_and_direction(
    settings: Settings, api_key: str
) -> None:
    base = 1_700_000_040_000
    rows = [
        ("coinbase", "BTC-USD", "1m", base, "ema_cross_12_26", 1, 0.4, 100.0, "up"),
        ("coinbase", "BTC-USD", "1m", base + 60_000, "rsi_14_overbought", -1, 0.2, 101.0, "hot"),
        ("binance", "ETH-USDT", "1m", base + 120_000, "ema_cross_12_26", -1, 0.9, 50.0, "down"),
    ]
    client = await connect(settings)
    try:
        await client.insert(
            f"{settings.clickhouse_database}.signals", rows, column_names=list(Signal.model_fields)
        )
    finally:
        await client.close()
    async with serve(settings, api_key) as http:
        newest = (await http.get("/v1/signals")).json()
        btc = (await http.get("/v1/signals", params={"symbol": "BTC-USD"})).json()
        bearish_ema = (
            await http.get("/v1/signals", params={"rule": "ema_cross_12_26", "direction": -1})
        ).json()
        bad_direction = await http.get("/v1/signals", params={"direction": 2})
        zero_direction = await http.get("/v1/signals", params={"direction": 0})
    assert [s["open_time"] for s in newest] == [base + 120_000, base + 60_000, base]
    assert newest[0] == dict(zip(Signal.model_fields, rows[2], strict=True))
    assert {s["symbol"] for s in btc} == {"BTC-USD"} and len(btc) == 2
    assert [s["symbol"] for s in bearish_ema] == ["ETH-USDT"]
    assert_error(bad_direction, 422, "invalid_request", "direction")
    assert_error(zero_direction, 422, "invalid_direction", "bullish")


# ---- API keys and rate limits ----------------------------------------------------


async def test_v1_routes_refuse_requests_without_a_valid_key(settings: Settings) -> None:
    async with serve(settings) as anonymous, serve(settings, "sfk_nope_nope") as forged:
        missing = await anonymous.get("/v1/candles", params=BTC_QUERY)
        wrong = await forged.get("/v1/candles", params=BTC_QUERY)
        health = await anonymous.get("/healthz")
    assert_error(missing, 401, "missing_api_key", "X-API-Key")
    assert_error(wrong, 401, "invalid_api_key")
    assert health.status_code == 200  # probes stay public


async def test_a_revoked_key_stops_working(settings: Settings) -> None:
    token = await new_api_key(settings, "to-revoke")
    client = await connect(settings)
    try:
        store = ApiKeyStore(client, settings.clickhouse_database)
        key_id = token.split("_")[1]
        assert await store.revoke(key_id)
        stored = await client.query(
            f"SELECT key_hash FROM {settings.clickhouse_database}.api_keys FINAL "
            "WHERE key_id = {k:String}",
            parameters={"k": key_id},
        )
    finally:
        await client.close()
    assert token.split("_")[2] not in str(stored.result_rows)  # only the hash is stored
    async with serve(settings, token) as http:
        assert_error(await http.get("/v1/candles", params=BTC_QUERY), 401, "invalid_api_key")


async def test_past_the_rate_limit_a_key_gets_429_with_retry_after(
    settings: Settings, api_key: str
) -> None:
    limited = settings.model_copy(update={"api_rate_limit_per_minute": 3})
    async with serve(limited, api_key) as http:
        codes = [(await http.get("/v1/candles", params=BTC_QUERY)).status_code for _ in range(4)]
        refused = await http.get("/v1/candles", params=BTC_QUERY)
    assert codes == [200, 200, 200, 429]
    assert_error(refused, 429, "rate_limited", "3 requests/minute")
    assert int(refused.headers["Retry-After"]) >= 1


async def test_public_read_serves_without_a_key(settings: Settings) -> None:
    public = settings.model_copy(update={"api_public_read": True})
    async with serve(public) as http:
        response = await http.get("/v1/candles", params=BTC_QUERY)
    assert response.status_code == 200
