"""Shared pieces of the end-to-end tests: known input, independent expectations, polling."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from ingest.producer import EventProducer
from processors.candles import interval_ms
from schemas.codec import codec_for
from schemas.events import Trade
from sigflow.settings import Settings
from sinks.warehouse import connect
from tests.conftest import Roles

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


def expected_candles(
    trades: list[Any], settings: Settings
) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """Closed candles of every configured interval, computed the obvious way from the
    trades (in order, none late): a window is closed once its end is at or before the
    newest trade time of its key minus the allowed lateness; empty windows have none."""
    newest: dict[tuple[str, str], int] = defaultdict(int)
    for t in trades:
        newest[(t.exchange, t.symbol)] = max(t.ts, newest[(t.exchange, t.symbol)])
    result = {}
    for interval in settings.candle_intervals:
        width = interval_ms(interval)
        windows: dict[tuple[str, str, int], list[Any]] = defaultdict(list)
        for t in trades:
            windows[(t.exchange, t.symbol, t.ts // width * width)].append(t)
        for (exchange, symbol, start), rows in windows.items():
            if start + width > newest[(exchange, symbol)] - settings.allowed_lateness_ms:
                continue
            volume = sum(t.size for t in rows)
            result[(exchange, symbol, interval, start)] = {
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
    async with EventProducer(settings, component="test") as producer:
        for i, trade in enumerate(trades):
            await producer.send_trade(trade, "test")
            if i == malformed_after:
                await producer.send(
                    settings.topic("trades"), b"coinbase:BTC-USD", b"{not json", "test"
                )
        await producer.flush()


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


async def assert_candles_match(
    settings: Settings, expected: dict[tuple[str, str, str, int], Any]
) -> None:
    """Every candle ClickHouse shows (FINAL) equals the independently computed one."""
    client = await connect(settings)
    try:
        result = await client.query(
            "SELECT exchange, symbol, interval, toUnixTimestamp64Milli(open_time) AS open_time, "
            "open, high, "
            "low, close, volume, vwap, trade_count, buy_volume, final "
            f"FROM {settings.clickhouse_database}.candles FINAL"
        )
    finally:
        await client.close()
    rows = list(result.named_results())
    where = ("exchange", "symbol", "interval", "open_time")
    assert {tuple(r[name] for name in where) for r in rows} == set(expected)
    for row in rows:
        want = expected[tuple(row[name] for name in where)]
        for exact in ("open", "high", "low", "close", "trade_count"):
            assert row[exact] == want[exact], f"{exact} of {row}"
        for summed in ("volume", "vwap", "buy_volume"):
            assert row[summed] == pytest.approx(want[summed], rel=1e-12, abs=1e-12), summed
        assert row["final"] is True
