"""The README's first command: `sigflow demo --once` on a bare machine (Tansu + chdb)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sigflow.stack.process import free_port, port_in_use

pytestmark = pytest.mark.e2e


def test_demo_once_puts_every_closed_candle_in_clickhouse_and_stops_what_it_started(
    tmp_path: Path,
) -> None:
    ports = {"kafka": free_port(), "warehouse": free_port(), "api": free_port()}
    env = {
        **os.environ,
        "SIGFLOW_DATA_DIR": str(tmp_path),
        "SIGFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['kafka']}",
        "SIGFLOW_CLICKHOUSE_URL": f"http://127.0.0.1:{ports['warehouse']}",
        "SIGFLOW_API_PORT": str(ports["api"]),
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sigflow",
            "demo",
            "--once",
            "--days",
            "1",
            "--trades-per-hour",
            "120",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    published = re.search(r"([\d,]+) trades published, 0 rejected", output)
    assert published and published.group(1) == "2,880", output  # 24 real hours x 120
    closed = re.search(r"([\d,]+) closed 1m candles in ClickHouse", output)
    assert closed, output
    assert re.search(rf"│\s+1m\s+│\s*{closed.group(1)}\s*│", output), output
    assert '"final": true' in output  # candles fetched through the HTTP API
    for name, port in ports.items():
        assert not port_in_use("127.0.0.1", port), f"demo left the {name} running"
