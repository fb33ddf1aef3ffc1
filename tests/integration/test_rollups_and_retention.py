"""Rollups stay exact when candles arrive twice, and retention drops what is old."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.asyncclient import AsyncClient

from sigflow.roles import migrate
from sigflow.settings import Settings
from sinks.warehouse import connect

pytestmark = pytest.mark.integration

HOUR_START = datetime(2019, 10, 1, 0, 0, tzinfo=UTC)
CANDLE_COLUMNS = [
    "exchange", "symbol", "interval", "open_time", "close_time", "open", "high", "low",
    "close", "volume", "quote_volume", "vwap", "trade_count", "buy_volume", "sell_volume",
    "final",
]  # fmt: skip


def one_minute_candles(exchange: str, symbol: str, minutes: int) -> list[list[Any]]:
    rng = random.Random(f"{exchange}{symbol}")
    rows = []
    price = 8_000.0
    for minute in range(minutes):
        open_, close = price, price * (1 + rng.gauss(0, 0.002))
        high, low = max(open_, close) * 1.001, min(open_, close) * 0.999
        volume, buy = rng.uniform(1, 5), rng.uniform(0, 1)
        start = HOUR_START + timedelta(minutes=minute)
        rows.append(
            [exchange, symbol, "1m", start, start + timedelta(minutes=1), open_, high, low,
             close, volume, volume * close, close, rng.randint(1, 50), buy, volume - buy, True]
        )  # fmt: skip
        price = close
    return rows


@pytest.fixture
async def warehouse(pipeline_settings: Settings) -> AsyncIterator[AsyncClient]:
    await migrate(pipeline_settings)
    client = await connect(pipeline_settings)
    yield client
    await client.close()


async def refresh(client: AsyncClient, view: str) -> None:
    await client.command(f"SYSTEM REFRESH VIEW {view}")
    await client.command(f"SYSTEM WAIT VIEW {view}")


async def test_hourly_rollup_equals_the_hour_of_unique_candles_although_some_arrived_twice(
    warehouse: AsyncClient,
) -> None:
    candles = one_minute_candles("binance", "BTC-USDT", 90)  # a full hour and half of one
    await warehouse.insert("candles", candles[:50], column_names=CANDLE_COLUMNS)
    await warehouse.insert("candles", candles[30:], column_names=CANDLE_COLUMNS)  # replayed
    await refresh(warehouse, "candles_1h_refresh")
    await warehouse.insert("candles", candles[60:], column_names=CANDLE_COLUMNS)  # again
    await refresh(warehouse, "candles_1h_refresh")

    result = await warehouse.query(
        "SELECT open_time, open, high, low, close, volume, trade_count, minutes "
        "FROM candles_1h FINAL WHERE symbol = {symbol:String} ORDER BY open_time",
        parameters={"symbol": "BTC-USDT"},
    )
    hours = [candles[:60], candles[60:]]
    expected = [
        (
            hour[0][3].replace(tzinfo=None),  # the client returns naive UTC
            hour[0][5],
            max(c[6] for c in hour),
            min(c[7] for c in hour),
            hour[-1][8],
            pytest.approx(sum(c[9] for c in hour), rel=1e-12),
            sum(c[12] for c in hour),
            len(hour),
        )
        for hour in hours
    ]
    assert [tuple(row) for row in result.result_rows] == expected


async def test_daily_volume_counts_each_candle_once_per_exchange(warehouse: AsyncClient) -> None:
    binance = one_minute_candles("binance", "ETH-USDT", 20)
    kraken = one_minute_candles("kraken", "ETH-USDT", 10)
    await warehouse.insert("candles", binance + kraken, column_names=CANDLE_COLUMNS)
    await warehouse.insert("candles", binance[5:], column_names=CANDLE_COLUMNS)
    await refresh(warehouse, "daily_volume_refresh")
    result = await warehouse.query(
        "SELECT exchange, volume, trade_count FROM daily_volume FINAL "
        "WHERE day = {day:Date} ORDER BY exchange",
        parameters={"day": HOUR_START.date()},
    )
    assert [tuple(row) for row in result.result_rows] == [
        (name, pytest.approx(sum(c[9] for c in rows), rel=1e-12), sum(c[12] for c in rows))
        for name, rows in (("binance", binance), ("kraken", kraken))
    ]


async def test_trades_older_than_the_retention_are_dropped_and_recent_ones_kept(
    warehouse: AsyncClient,
) -> None:
    now = datetime.now(UTC)
    columns = ["exchange", "symbol", "trade_id", "price", "size", "side", "ts", "received_ts",
               "inserted_at"]  # fmt: skip
    trade = ["binance", "BTC-USDT", "id", 1.0, 1.0, "buy", HOUR_START, HOUR_START]
    old = [*trade[:2], "old", *trade[3:], now - timedelta(days=91)]
    replayed = [*trade[:2], "replayed", *trade[3:], now]
    await warehouse.insert("trades", [old, replayed], column_names=columns)
    await warehouse.command("OPTIMIZE TABLE trades FINAL")
    result = await warehouse.query("SELECT trade_id FROM trades")
    assert [row[0] for row in result.result_rows] == ["replayed"]
