"""The first slice end to end: trades → Kafka → Faust → candles → ClickHouse → API.

Runs real Apache Kafka, the processor and sink as real processes, and the ClickHouse
engine; expected candles are computed here independently with plain Python.
"""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from api.keys import ApiKeyStore
from sigflow.kafka import consumer_lag
from sigflow.settings import Settings
from sinks.warehouse import connect
from tests.conftest import Roles
from tests.e2e.pipeline import (
    MINUTE,
    assert_candles_match,
    dead_letters,
    eventually,
    expected_candles,
    known_trades,
    publish,
    scalar,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


async def test_replayed_trades_become_exact_candles_in_clickhouse_and_the_api(
    pipeline_settings: Settings, roles: Roles
) -> None:
    settings = pipeline_settings
    trades = known_trades()
    expected = expected_candles(trades, settings)
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

    await assert_candles_match(settings, expected)
    # Candles of several intervals, each window exactly once (the default 1s..1d).
    assert {key[2] for key in expected} == {"1s", "1m", "5m", "15m"}

    async def indicators_written() -> bool:
        sql = f"SELECT count() FROM {db}.indicators FINAL WHERE name = 'vwap'"
        return bool(await scalar(settings, sql) == len(expected))

    await eventually(indicators_written, "an indicator row per candle", roles)

    client = await connect(settings)
    key = await ApiKeyStore(client, db).create("e2e")
    await client.close()
    api = create_app(settings)
    transport = httpx.ASGITransport(app=api)
    series = {"exchange": "coinbase", "symbol": "BTC-USD", "interval": "1m"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers={"X-API-Key": key.token}
    ) as http:
        response = await http.get("/v1/candles", params=series)
        indicators = await http.get("/v1/indicators", params={**series, "name": "vwap"})
    await api.state.warehouse.close()
    assert indicators.status_code == 200, indicators.text
    btc = tuple(series.values())
    btc_minutes = {key[3]: want for key, want in expected.items() if key[:3] == btc}
    assert len(indicators.json()) == len(btc_minutes)
    for point in indicators.json():
        want = btc_minutes[point["open_time"]]
        assert point["values"]["vwap"] == pytest.approx(want["vwap"], rel=1e-12)
    assert response.status_code == 200, response.text
    served = response.json()
    assert [c["open_time"] for c in served] == sorted(btc_minutes)
    for candle in served:
        want = btc_minutes[candle["open_time"]]
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
