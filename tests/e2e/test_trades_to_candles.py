"""The first slice end to end: trades → Kafka → Faust → candles → ClickHouse → API.

Runs real Apache Kafka, the processor and sink as real processes, and the ClickHouse
engine; expected candles are computed here independently with plain Python.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from api.app import create_app
from ingest.publisher import TradePublisher
from schemas.codec import codec_for
from schemas.events import Trade
from sigflow.kafka import consumer_lag
from sigflow.settings import Settings
from sinks.warehouse import connect
from tests.conftest import Roles

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MINUTE = 60_000
START = 1_700_000_040_000  # a whole minute
TRADE = codec_for(Trade)


def known_trades() -> list[Any]:
    """Five minutes of trades for two symbols, then one trade per symbol to close them."""
    rng = random.Random(42)
    trades = []
    for exchange, symbol, base in (
        ("coinbase", "BTC-USD", 37_000.0),
        ("binance", "ETH-USDT", 2_000.0),
    ):
        price, ts = base, START
        for i in range(400):
            ts += rng.randint(100, 1_400)
            price = round(price * (1 + rng.gauss(0, 0.0005)), 2)
            trades.append(
                TRADE.build(
                    exchange=exchange,
                    symbol=symbol,
                    trade_id=str(i),
                    price=price,
                    size=round(rng.uniform(0.001, 2.0), 6),
                    side=rng.choice(["buy", "sell"]),
                    ts=ts,
                    received_ts=ts + 5,
                )
            )
        trades.append(
            TRADE.build(
                exchange=exchange,
                symbol=symbol,
                trade_id="closer",
                price=price,
                size=1.0,
                side="buy",
                ts=START + 10 * MINUTE,
                received_ts=START + 10 * MINUTE,
            )
        )
    return trades


def expected_candles(trades: list[Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Closed 1m candles computed the obvious way; the newest window per key stays open."""
    windows: dict[tuple[str, str, int], list[Any]] = defaultdict(list)
    for t in trades:
        windows[(t.exchange, t.symbol, t.ts // MINUTE * MINUTE)].append(t)
    newest = {}
    for exchange, symbol, start in windows:
        newest[(exchange, symbol)] = max(start, newest.get((exchange, symbol), 0))
    result = {}
    for (exchange, symbol, start), rows in windows.items():
        if start == newest[(exchange, symbol)]:
            continue
        volume = sum(t.size for t in rows)
        result[(exchange, symbol, start)] = {
            "open": rows[0].price,
            "high": max(t.price for t in rows),
            "low": min(t.price for t in rows),
            "close": rows[-1].price,
            "volume": volume,
            "vwap": sum(t.price * t.size for t in rows) / volume,
            "trade_count": len(rows),
            "buy_volume": sum(t.size for t in rows if t.side == "buy"),
        }
    return result


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, roles: Roles, timeout: float = 120.0
) -> None:
    """Poll `check` until true; fail at once with the logs if a role died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        if dead := roles.dead():
            pytest.fail(f"role(s) {dead} exited while waiting for {what}\n{roles.logs()}")
        await asyncio.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}\n{roles.logs()}")


async def publish(
    settings: Settings, trades: list[Any], malformed_after: int | None = None
) -> None:
    async with TradePublisher(settings, component="test") as publisher:
        for i, trade in enumerate(trades):
            await publisher.publish(trade)
            if i == malformed_after:
                await publisher.producer.send(
                    settings.topic("trades"), b"{not json", key=b"coinbase:BTC-USD"
                )
        await publisher.flush()


async def scalar(settings: Settings, sql: str) -> Any:
    client = await connect(settings)
    try:
        return (await client.query(sql)).result_rows[0][0]
    finally:
        await client.close()


async def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        settings.topic("dlq"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3_000)
    finally:
        await consumer.stop()
    return [orjson.loads(r.value) for records in batches.values() for r in records]


async def test_replayed_trades_become_exact_candles_in_clickhouse_and_the_api(
    pipeline_settings: Settings, roles: Roles
) -> None:
    settings = pipeline_settings
    trades = known_trades()
    expected = expected_candles(trades)
    db = settings.clickhouse_database
    roles.start("sink")
    roles.start("process")

    await publish(settings, trades, malformed_after=100)

    async def all_candles_written() -> bool:
        try:
            return await scalar(settings, f"SELECT count() FROM {db}.candles FINAL") == len(
                expected
            )
        except Exception:
            return False  # the sink has not created the tables yet

    await eventually(all_candles_written, f"{len(expected)} candles in ClickHouse", roles)

    client = await connect(settings)
    rows = (
        await client.query(
            f"SELECT exchange, symbol, toUnixTimestamp64Milli(open_time), open, high, low, close, "
            f"volume, vwap, trade_count, buy_volume, close_time, final FROM {db}.candles FINAL"
        )
    ).result_rows
    await client.close()
    for (
        exchange,
        symbol,
        open_time,
        o,
        h,
        low,
        c,
        volume,
        vwap,
        count,
        buy,
        _close_time,
        final,
    ) in rows:
        want = expected[(exchange, symbol, open_time)]
        assert (o, h, low, c, count) == (
            want["open"],
            want["high"],
            want["low"],
            want["close"],
            want["trade_count"],
        )
        assert volume == pytest.approx(want["volume"], rel=1e-12)
        assert vwap == pytest.approx(want["vwap"], rel=1e-12)
        assert buy == pytest.approx(want["buy_volume"], rel=1e-12, abs=1e-12)
        assert final is True

    api = create_app(settings)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        response = await http.get(
            "/v1/candles", params={"exchange": "coinbase", "symbol": "BTC-USD", "interval": "1m"}
        )
    await api.state.warehouse.close()
    assert response.status_code == 200, response.text
    served = response.json()
    want_btc = sorted(k[2] for k in expected if k[0] == "coinbase")
    assert [c["open_time"] for c in served] == want_btc
    for candle in served:
        want = expected[("coinbase", "BTC-USD", candle["open_time"])]
        assert candle["close"] == want["close"] and candle["trade_count"] == want["trade_count"]
        assert candle["close_time"] == candle["open_time"] + MINUTE

    letters = await dead_letters(settings)
    rejected = [d for d in letters if d["component"] == "processor" and d["raw"] == "{not json"]
    assert len(rejected) == 1
    assert rejected[0]["error_kind"] == "schema"
    assert "not valid JSON" in rejected[0]["reason"]
    assert rejected[0]["source_topic"] == settings.topic("trades")

    # Replay the same input: nothing doubles for an analyst reading with FINAL.
    await publish(settings, trades)

    async def sink_caught_up() -> bool:
        return await consumer_lag(settings, settings.sink_group_id, [settings.topic("trades")]) == 0

    await eventually(sink_caught_up, "the sink to commit the replayed trades", roles)
    assert await scalar(settings, f"SELECT count() FROM {db}.trades FINAL") == len(trades)
    assert await scalar(settings, f"SELECT count() FROM {db}.candles FINAL") == len(expected)
