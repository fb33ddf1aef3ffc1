"""The sink's guarantees: a replay from the start and a warehouse outage mid-stream both
leave exactly one row per trade, checked with the SQL an analyst would run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sigflow.kafka import consumer_lag
from sigflow.settings import Settings
from sigflow.stack.local import EmbeddedWarehouse
from sigflow.stack.process import free_port
from tests.conftest import Roles, running
from tests.e2e.pipeline import eventually, known_trades, publish, scalar

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DUPLICATED_TRADES = """
SELECT count() FROM (
    SELECT exchange, symbol, trade_id, count() AS copies
    FROM {db}.trades FINAL GROUP BY exchange, symbol, trade_id HAVING copies > 1
)
"""


async def trades_in_warehouse(settings: Settings) -> int:
    db = settings.clickhouse_database
    try:
        return int(await scalar(settings, f"SELECT count() FROM {db}.trades FINAL"))
    except Exception:  # the warehouse is down or the table not migrated yet
        return -1


async def test_replaying_the_trades_topic_from_the_start_adds_no_row(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    trades = known_trades()
    await publish(pipeline_settings, trades)
    first = Roles(pipeline_settings, tmp_path / "first")
    first.start("sink")

    async def all_written() -> bool:
        return await trades_in_warehouse(pipeline_settings) == len(trades)

    try:
        await eventually(all_written, f"{len(trades)} trades", first)
    finally:
        first.stop_all()

    # A new consumer group reads every record again, in batches of other sizes.
    replay_settings = pipeline_settings.model_copy(
        update={"sink_group_id": pipeline_settings.sink_group_id + "-replay", "sink_batch_rows": 7}
    )
    replay = Roles(replay_settings, tmp_path / "replay")
    replay.start("sink")
    topics = [replay_settings.topic("trades")]

    async def replay_done() -> bool:
        return await consumer_lag(replay_settings, replay_settings.sink_group_id, topics) == 0

    try:
        await eventually(replay_done, "the replay to catch up", replay)
    finally:
        replay.stop_all()
    db = pipeline_settings.clickhouse_database
    assert await trades_in_warehouse(pipeline_settings) == len(trades)
    assert await scalar(pipeline_settings, DUPLICATED_TRADES.format(db=db)) == 0


@pytest.fixture
def own_warehouse(tmp_path: Path) -> Iterator[EmbeddedWarehouse]:
    warehouse = EmbeddedWarehouse(tmp_path / "own-warehouse", "127.0.0.1", free_port())
    with running(warehouse, "the ClickHouse engine"):
        yield warehouse


async def test_a_warehouse_outage_mid_stream_loses_and_doubles_nothing(
    pipeline_settings: Settings, own_warehouse: EmbeddedWarehouse, tmp_path: Path
) -> None:
    settings = pipeline_settings.model_copy(update={"clickhouse_url": own_warehouse.url})
    trades = known_trades()
    half = len(trades) // 2
    roles = Roles(settings, tmp_path / "roles")
    roles.start("sink")
    try:
        await publish(settings, trades[:half])

        async def first_half_written() -> bool:
            return await trades_in_warehouse(settings) == half

        await eventually(first_half_written, "the first half", roles)
        own_warehouse.stop()
        await publish(settings, trades[half:])
        lag_while_down = await consumer_lag(
            settings, settings.sink_group_id, [settings.topic("trades")]
        )
        assert lag_while_down, "the sink must not commit what it could not write"
        own_warehouse.start()

        async def all_written() -> bool:
            return await trades_in_warehouse(settings) == len(trades)

        await eventually(all_written, "every trade after the outage", roles)
        assert roles.dead() == [], "the sink must wait out the outage, not exit"
    finally:
        roles.stop_all()
    db = settings.clickhouse_database
    assert await scalar(settings, DUPLICATED_TRADES.format(db=db)) == 0
