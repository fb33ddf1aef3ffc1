"""Every SQL example in the README runs against the real tables and returns rows."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.asyncclient import AsyncClient

from processors.alerts import AlertEngine, load_alert_rules
from processors.anomalies.findings import Finding, to_anomaly
from processors.candle_stream import to_candle
from processors.candles import ClosedCandle, WindowAggregate
from schemas.codec import codec_for
from schemas.events import Alert, Anomaly, Candle, Trade
from sigflow.roles import migrate
from sigflow.settings import Settings
from sinks.warehouse import connect

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_sql_statements() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return [s.strip() for block in blocks for s in block.split(";") if s.strip()]


def test_readme_has_sql_examples() -> None:
    assert len(readme_sql_statements()) >= 3


async def insert_onchain_rows(client: AsyncClient, db: str) -> None:
    """One confirmed mainnet block with a whale USDC transfer, as the chain feed makes them."""
    block = {
        "chain_id": 1, "number": 20_000_000, "hash": "0x" + "ab" * 32,
        "parent_hash": "0x" + "cd" * 32, "timestamp": 1_700_000_000_000,
        "base_fee": 4_200_000_000, "gas_used": 12_000_000, "tx_count": 150,
        "status": "confirmed", "confirmations": 12,
    }  # fmt: skip
    transfer = {
        "chain_id": 1, "block": 20_000_000, "block_hash": "0x" + "ab" * 32,
        "timestamp": 1_700_000_000_000, "tx_hash": "0x" + "ef" * 32, "log_index": 7,
        "token": "0x" + "12" * 20, "token_symbol": "USDC", "from_address": "0x" + "34" * 20,
        "to_address": "0x" + "56" * 20, "amount": Decimal("2500000.000001"), "usd_value": None,
        "confirmations": 12, "removed": False,
    }  # fmt: skip
    for table, row in (("onchain_blocks", block), ("onchain_transfers", transfer)):
        await client.insert(f"{db}.{table}", [list(row.values())], column_names=list(row))


@pytest.mark.parametrize("statement", readme_sql_statements())
async def test_readme_sql_example_returns_rows(statement: str, pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    db = settings.clickhouse_database
    await migrate(settings)
    client = await connect(settings)
    try:
        trades = [
            codec_for(Trade).build(
                exchange="coinbase",
                symbol="BTC-USD",
                trade_id=str(i),
                price=100.0 + i,
                size=1.0,
                side="buy",
                ts=1_700_000_000_000 + i * 1_000,
                received_ts=1_700_000_000_000 + i * 1_000,
            )
            for i in range(10)
        ]
        columns = list(Trade.model_fields)
        await client.insert(
            f"{db}.trades", [[getattr(t, c) for c in columns] for t in trades], column_names=columns
        )
        aggregate = WindowAggregate(100, 109, 100, 109, 0, 9, 10, 1045, 10, 10)
        candle = to_candle(
            "coinbase", "BTC-USD", "1m", 60_000, ClosedCandle(1_699_999_980_000, aggregate)
        )
        candle_columns = list(Candle.model_fields)
        await client.insert(
            f"{db}.candles",
            [[getattr(candle, c) for c in candle_columns]],
            column_names=candle_columns,
        )
        await client.insert(
            f"{db}.indicators",
            [
                ("coinbase", "BTC-USD", "1m", candle.open_time, name, value)
                for name, value in (("rsi_14", 55.0), ("bb_lower", 99.0), ("bb_upper", 110.0))
            ],
            column_names=["exchange", "symbol", "interval", "open_time", "name", "value"],
        )
        await insert_onchain_rows(client, db)
        for view in ("candles_1h_refresh", "daily_volume_refresh"):  # rollups, now
            await client.command(f"SYSTEM REFRESH VIEW {db}.{view}")
            await client.command(f"SYSTEM WAIT VIEW {db}.{view}")
        await insert_anomaly_and_alert(client, db)
        sql = statement.replace("sigflow.", f"{db}.")
        rows = (await client.query(sql, parameters={"symbol": "BTC-USD"})).result_rows
    finally:
        await client.close()
    assert rows, f"README example returned nothing:\n{statement}"


async def insert_anomaly_and_alert(client: AsyncClient, db: str) -> None:
    """An anomaly from now (the README asks about today) and the alert it raises."""
    finding = Finding(
        kind="price_jump",
        subject="coinbase:BTC-USD",
        exchange="coinbase",
        symbol="BTC-USD",
        interval="1m",
        ts=int(time.time() * 1000) // 60_000 * 60_000,
        score=9.3,
        severity="critical",
        observed=0.031,
        expected=0.0,
        explanation="BTC-USD on coinbase moved +3.15% in 1m",
    )
    anomaly = to_anomaly(finding)
    [decision] = AlertEngine(load_alert_rules()).on_anomaly(anomaly, {})
    whale = to_anomaly(  # the USDC transfer of `insert_onchain_rows`, flagged today
        Finding(
            kind="whale_transfer",
            subject="chain:1",
            chain_id=1,
            ts=finding.ts,
            score=2.5,
            severity="info",
            observed=2_500_000.000001,
            expected=1_000_000.0,
            reference="0x" + "ef" * 32 + ":7",
            explanation="2,500,000.000001 USDC worth $2,500,000 moved on chain 1",
        )
    )
    for table, model, event in (
        ("anomalies", Anomaly, anomaly),
        ("anomalies", Anomaly, whale),
        ("alerts", Alert, decision.alert),
    ):
        columns = list(model.model_fields)
        await client.insert(
            f"{db}.{table}", [[getattr(event, c) for c in columns]], column_names=columns
        )
