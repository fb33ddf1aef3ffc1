"""Every role logs one JSON object per line, Faust's worker included, with correlation
fields: the role on every line, topic and partitions on the sink's flush lines."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sigflow.settings import Settings
from tests.conftest import Roles
from tests.e2e.pipeline import eventually, known_trades, publish, scalar

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def json_lines(roles: Roles, name: str) -> list[dict[str, Any]]:
    """Every line the role wrote (stdout and stderr share the log), each parsed as JSON."""
    [process] = [p for p in roles.processes if p.name == name]
    lines = process.log_file.read_text().splitlines()
    assert lines, f"{name} wrote no log line"
    parsed = []
    for line in lines:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            pytest.fail(f"{name} wrote a line that is not JSON: {line!r}")
    return parsed


async def test_processor_and_sink_write_json_lines_with_role_topic_and_partition(
    pipeline_settings: Settings, tmp_path: Any
) -> None:
    settings = pipeline_settings.model_copy(update={"log_json": True})
    db = settings.clickhouse_database
    trades = known_trades()
    roles = Roles(settings, tmp_path / "roles")
    try:
        roles.start("process")
        roles.start("sink")
        await publish(settings, trades)

        async def candles_written() -> bool:
            try:
                return bool(await scalar(settings, f"SELECT count() FROM {db}.candles") > 0)
            except Exception:
                return False

        await eventually(candles_written, "candles in the warehouse", roles)
    finally:
        roles.stop_all()

    processor = json_lines(roles, "process")
    assert {line["role"] for line in processor} == {"process"}
    faust = [line for line in processor if line["logger"].startswith("faust.")]
    assert any(line["message"].endswith("Ready") for line in faust), processor

    sink = json_lines(roles, "sink")
    assert {line["role"] for line in sink} == {"sink"}
    trades_topic = settings.topic("trades")
    flushes = [line for line in sink if line["message"] == "rows written"]
    trades_flushes = [line for line in flushes if line["topic"] == trades_topic]
    assert sum(line["rows"] for line in trades_flushes) == len(trades)
    for flush in trades_flushes:
        assert flush["table"] == "trades"
        # Each partition written, with the first and last offset the insert covered.
        assert flush["partitions"] and all(isinstance(p, int) for p in flush["partitions"])
        assert sorted(int(p) for p in flush["offsets"]) == flush["partitions"]
        assert all(first <= last for first, last in flush["offsets"].values())
