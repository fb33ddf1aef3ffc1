"""`sigflow stack up|status|down` with Apache Kafka, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sigflow.stack.process import free_port, port_in_use

pytestmark = pytest.mark.integration


def sigflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sigflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_stack_up_runs_kafka_and_the_warehouse_in_the_background_until_down(
    tmp_path: Path,
) -> None:
    kafka_port, warehouse_port = free_port(), free_port()
    env = {
        **os.environ,
        "SIGFLOW_DATA_DIR": str(tmp_path),
        "SIGFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "SIGFLOW_CLICKHOUSE_URL": f"http://127.0.0.1:{warehouse_port}",
        "COLUMNS": "200",
    }
    try:
        up = sigflow("stack", "up", "--broker", "kafka", env=env)
        assert up.returncode == 0, up.stderr
        assert "kafka" in up.stderr and "running" in up.stderr
        assert port_in_use("127.0.0.1", kafka_port) and port_in_use("127.0.0.1", warehouse_port)
        status = sigflow("stack", "status", env=env)
        assert status.returncode == 0, status.stderr
        again = sigflow("stack", "up", "--broker", "tansu", env=env)
        assert again.returncode == 2 and "kafka broker already runs" in again.stderr
    finally:
        down = sigflow("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert not port_in_use("127.0.0.1", kafka_port)
    assert not port_in_use("127.0.0.1", warehouse_port)
    assert sigflow("stack", "status", env=env).returncode == 1
