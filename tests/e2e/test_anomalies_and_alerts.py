"""Anomalies and alerts end to end, and replay determinism of every output topic.

Real Apache Kafka, two processors and two sinks as real processes, the ClickHouse
engine. The same labelled trades (a +3% jump on two exchanges, then one exchange
drifting 120 bps away for two minutes) are published to two fresh topic prefixes, each
processed by its own app id; both sinks write into one database.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.anomalies import MINUTE, START_TS, Divergence, Scenario, market_trades
from processors.app import by_symbol_topic
from sigflow.kafka import consumer_lag
from sigflow.settings import Settings
from tests.conftest import Roles
from tests.e2e.pipeline import eventually, publish, scalar

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

OUTPUTS = ("candles", "indicators", "signals", "anomalies", "alerts")
JUMP_MINUTE, DIVERGENCE_MINUTE = 30, 34
SCENARIO = Scenario(
    exchanges=("binance", "coinbase"),
    symbols={"BTC-USDT": 60_000.0},
    minutes=42,
    trades_per_second=1.0,
    seed=7,
    jumps=(("BTC-USDT", JUMP_MINUTE, 0.03),),
    divergences=(Divergence("coinbase", "BTC-USDT", DIVERGENCE_MINUTE, (120.0, 120.0)),),
)


async def topic_records(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a topic up to its end offsets now, sorted."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
        ] or [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[tuple[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while any([await consumer.position(tp) < end[tp] for tp in partitions]):
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += [(r.key or b"", r.value or b"") for r in batch]
    finally:
        await consumer.stop()
    return sorted(records)


async def run_pipeline(settings: Settings, roles: Roles, trades: list[Any]) -> None:
    """Start a processor and a sink, publish the trades, wait until every stream is done."""
    roles.start("sink")
    roles.start("process")
    await publish(settings, trades)
    inputs = [
        settings.topic("trades"),
        by_symbol_topic(settings),
        settings.topic("signals"),
        settings.topic("anomalies"),
    ]

    async def processed() -> bool:
        try:
            return await consumer_lag(settings, settings.processor_app_id, inputs) == 0
        except Exception:
            return False  # the processor has not created its internal topic yet

    await eventually(processed, "the processor to commit every input", roles, timeout=180)


async def test_jump_and_divergence_raise_anomalies_and_alerts_identically_on_replay(
    pipeline_settings: Settings, roles: Roles, tmp_path: Any
) -> None:
    # The scenario and its labels are minutes: with 1s candles too, the 1s jump would
    # take the alert rule's cool-down before the 1m one.
    first = pipeline_settings.model_copy(update={"candle_intervals": ["1m"]})
    roles.settings = first
    second = first.model_copy(
        update={
            "topic_prefix": "r" + first.topic_prefix,
            "processor_app_id": first.processor_app_id + "-replay",
            "sink_group_id": first.sink_group_id + "-replay",
        }
    )
    db = first.clickhouse_database
    trades = market_trades(SCENARIO)
    await run_pipeline(first, roles, trades)
    replay = Roles(second, tmp_path / "replay")
    try:
        await run_pipeline(second, replay, trades)
        outputs = {
            name: (
                await topic_records(first, first.topic(name)),
                await topic_records(second, second.topic(name)),
            )
            for name in OUTPUTS
        }
        sink_lag = [second.topic(name) for name in ("anomalies", "alerts")]

        async def replay_sunk() -> bool:
            return await consumer_lag(second, second.sink_group_id, sink_lag) == 0

        await eventually(replay_sunk, "the replay's sink to commit", replay)
    finally:
        replay.stop_all()

    for name, (original, replayed) in outputs.items():
        assert original, f"no {name} records"
        assert original == replayed, f"{name} records differ between identical runs"

    anomalies = [orjson.loads(value) for _, value in outputs["anomalies"][0]]
    found = {(a["kind"], a["subject"], a["ts"]): a for a in anomalies}
    jump_ts, divergence_ts = START_TS + JUMP_MINUTE * MINUTE, START_TS + DIVERGENCE_MINUTE * MINUTE
    for exchange in SCENARIO.exchanges:
        jump = found[("price_jump", f"{exchange}:BTC-USDT", jump_ts)]
        assert jump["severity"] == "critical"
        assert jump["observed"] > 0.02
        assert f"BTC-USDT on {exchange} moved +2." in jump["explanation"]
        divergence = found[("divergence", f"{exchange}:BTC-USDT", divergence_ts)]
        assert divergence["severity"] == "critical"
        assert divergence["observed"] * (1 if exchange == "coinbase" else -1) > 50
    assert not [a for a in anomalies if a["kind"] == "divergence" and a["ts"] < divergence_ts]

    alerts = {orjson.loads(value)["alert_id"] for _, value in outputs["alerts"][0]}
    for exchange in SCENARIO.exchanges:
        subject = f"{exchange}:BTC-USDT"
        assert f"market-anomalies:price_jump:{subject}:1m:{jump_ts}" in alerts
        assert f"market-anomalies:divergence:{subject}:1m:{divergence_ts}" in alerts
        # The second divergent minute is within the rule's 15-minute cool-down.
        assert f"market-anomalies:divergence:{subject}:1m:{divergence_ts + MINUTE}" not in alerts

    spreads = [
        orjson.loads(value)
        for key, value in outputs["indicators"][0]
        if b"xex_spread_bps" in value and key == b"coinbase:BTC-USDT"
    ]
    at_divergence = next(s for s in spreads if s["open_time"] == divergence_ts)
    assert at_divergence["values"]["xex_exchanges"] == 2
    assert at_divergence["values"]["xex_spread_bps"] > 100

    # Both runs' sinks wrote the same records into one database: each lands once.
    assert await scalar(first, f"SELECT count() FROM {db}.anomalies FINAL") == len(anomalies)
    assert await scalar(first, f"SELECT count() FROM {db}.alerts FINAL") == len(alerts)
