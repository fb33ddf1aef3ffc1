"""Killing the processor and the sink mid-stream loses and doubles nothing a user sees."""

from __future__ import annotations

import os
import signal

import pytest

from sigflow.settings import Settings
from tests.conftest import Roles
from tests.e2e.pipeline import (
    assert_candles_match,
    dead_letters,
    eventually,
    expected_candles,
    known_trades,
    publish,
    scalar,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def kill_hard(roles: Roles, name: str) -> None:
    """SIGKILL: no flush, no commit, no goodbye to the consumer group."""
    [process] = [p for p in roles.processes if p.name == name]
    pid = process.pid
    assert pid is not None, f"{name} is not running"
    os.killpg(pid, signal.SIGKILL)
    roles.processes.remove(process)


async def test_sigkilled_processor_and_sink_resume_without_loss_or_duplicates(
    pipeline_settings: Settings, roles: Roles
) -> None:
    settings = pipeline_settings
    db = settings.clickhouse_database
    trades = known_trades()
    expected = expected_candles(trades, settings)
    half = len(trades) // 2
    roles.start("sink")
    roles.start("process")

    await publish(settings, trades[:half])

    async def some_candles_written() -> bool:
        try:
            return await scalar(settings, f"SELECT count() FROM {db}.candles") > 0
        except Exception:
            return False

    await eventually(some_candles_written, "the first candles", roles)
    kill_hard(roles, "process")
    kill_hard(roles, "sink")
    await publish(settings, trades[half:])
    roles.start("process")
    roles.start("sink")

    async def all_candles_written() -> bool:
        done = await scalar(settings, f"SELECT count() FROM {db}.candles FINAL")
        return bool(done == len(expected))

    await eventually(all_candles_written, f"{len(expected)} candles after the restart", roles)
    rejected = [d for d in await dead_letters(settings) if d["component"] == "processor"]
    assert rejected == [], "valid trades were dead-lettered after the restart"
    await assert_candles_match(settings, expected)
    assert await scalar(settings, f"SELECT count() FROM {db}.trades FINAL") == len(trades)
