"""SIGTERM mid-stream loses nothing: the role finishes its batch, commits and exits 0;
after a restart every row is there exactly once.

(Exchange ingest is covered by tests/integration/test_exchange_feeds.py: SIGTERM while
following a feed exits 0 with every received trade on the topic.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.producer import EventProducer
from sigflow.settings import Settings
from sigflow.stack.process import BackgroundProcess
from tests.conftest import Roles
from tests.e2e.pipeline import (
    assert_candles_match,
    dead_letters,
    eventually,
    expected_candles,
    known_trades,
    scalar,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CHUNK = 4  # trades per send in the steady stream
PAUSE_SECONDS = 0.04  # between sends: the stream lasts about ten seconds


@contextlib.asynccontextmanager
async def steady_stream(settings: Settings, trades: list[Any]) -> AsyncIterator[asyncio.Task[None]]:
    """Publish `trades` a few at a time in the background (each chunk acknowledged)."""

    async def stream() -> None:
        async with EventProducer(settings, component="test") as producer:
            for start in range(0, len(trades), CHUNK):
                for trade in trades[start : start + CHUNK]:
                    await producer.send_trade(trade, "test")
                await producer.flush()
                await asyncio.sleep(PAUSE_SECONDS)

    task = asyncio.create_task(stream())
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def sigterm(process: BackgroundProcess) -> int | None:
    """Stop with SIGTERM (SIGKILL only after 30 s) and return the exit code."""
    process.stop(timeout=30)
    return process.exit_code


def role(roles: Roles, name: str) -> BackgroundProcess:
    [process] = [p for p in roles.processes if p.name == name]
    return process


async def trades_below_commit(settings: Settings, group: str) -> int:
    """Trades in the `trades` records that `group` has committed (all offsets below)."""
    topic = settings.topic("trades")
    partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
    member = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group)
    await member.start()  # never subscribes: reads the commits without joining the group
    try:
        committed = {tp: await member.committed(tp) or 0 for tp in partitions}
    finally:
        await member.stop()
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await reader.start()
    count = 0
    try:
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        async with asyncio.timeout(20):
            while any([await reader.position(tp) < committed[tp] for tp in partitions]):
                for tp, records in (await reader.getmany(timeout_ms=200)).items():
                    count += sum(
                        len(orjson.loads(r.value or b"[]"))
                        for r in records
                        if r.offset < committed[tp]
                    )
    finally:
        await reader.stop()
    return count


async def test_sigterm_mid_stream_makes_the_sink_flush_commit_and_exit_0_losing_nothing(
    pipeline_settings: Settings, roles: Roles
) -> None:
    settings = pipeline_settings
    db = settings.clickhouse_database
    trades = known_trades()
    count_sql = f"SELECT count() FROM {db}.trades"

    async def rows() -> int:
        try:
            return int(await scalar(settings, count_sql))
        except Exception:  # not migrated yet
            return 0

    sink = roles.start("sink")
    async with steady_stream(settings, trades) as stream:

        async def some_rows() -> bool:
            return await rows() > 0

        await eventually(some_rows, "the first rows", roles)
        assert not stream.done(), "the stream ended before the SIGTERM: make it longer"
        code = await asyncio.to_thread(sigterm, sink)
        assert code == 0, f"sink exited with {code}\n{sink.log_tail()}"
        # What it committed is exactly what it wrote: the in-flight batch was flushed
        # before the commit, and nothing consumed after it was written.
        written = await rows()
        assert 0 < written < len(trades)
        assert await trades_below_commit(settings, settings.sink_group_id) == written
        await stream

    roles.start("sink")

    async def all_rows() -> bool:
        return await rows() == len(trades)

    await eventually(all_rows, f"{len(trades)} rows after the restart", roles)
    # Exactly once, without FINAL: nothing was read (and inserted) twice.
    assert await rows() == len(trades)
    unique = f"SELECT uniqExact(exchange, symbol, trade_id) FROM {db}.trades"
    assert await scalar(settings, unique) == len(trades)


async def test_sigterm_mid_stream_stops_the_processor_cleanly_and_candles_come_out_exact(
    pipeline_settings: Settings, roles: Roles
) -> None:
    settings = pipeline_settings
    db = settings.clickhouse_database
    trades = known_trades()
    expected = expected_candles(trades, settings)
    roles.start("sink")
    processor = roles.start("process")
    async with steady_stream(settings, trades) as stream:

        async def some_candles() -> bool:
            try:
                return bool(await scalar(settings, f"SELECT count() FROM {db}.candles") > 0)
            except Exception:
                return False

        await eventually(some_candles, "the first candles", roles)
        assert not stream.done(), "the stream ended before the SIGTERM: make it longer"
        code = await asyncio.to_thread(sigterm, processor)
        assert code == 0, f"processor exited with {code}\n{processor.log_tail()}"
        await stream
    roles.processes.remove(processor)
    roles.start("process")

    async def all_candles() -> bool:
        return bool(await scalar(settings, f"SELECT count() FROM {db}.candles") >= len(expected))

    await eventually(all_candles, f"{len(expected)} candles after the restart", roles)
    rejected = [d for d in await dead_letters(settings) if d["component"] == "processor"]
    assert rejected == [], "valid trades were dead-lettered after the restart"
    await assert_candles_match(settings, expected)
