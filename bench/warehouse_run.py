"""The ClickHouse a benchmark writes to, as `bench.kafka_run` gives the broker.

`SIGFLOW_CLICKHOUSE_URL` (with `SIGFLOW_CLICKHOUSE_USER` / `_PASSWORD`) when set, else
the embedded engine started on a free port for the run. A run keeps its tables in
databases of its own (`database_for`) and drops them when it ends.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigflow.settings import Settings
from sigflow.stack.local import EmbeddedWarehouse
from sigflow.stack.process import free_port
from sinks.warehouse import IDENTIFIER, connect


@dataclass(frozen=True)
class Warehouse:
    """Where a benchmark's rows go: the settings to reach it, and how to say so."""

    settings: dict[str, Any] = field(repr=False)
    description: str


@contextlib.contextmanager
def bench_warehouse(say: Any = None) -> Iterator[Warehouse]:
    """`SIGFLOW_CLICKHOUSE_URL` if set, else the embedded engine for the run's duration."""
    if url := os.environ.get("SIGFLOW_CLICKHOUSE_URL"):
        configured = Settings()
        yield Warehouse(
            {
                "clickhouse_url": url,
                "clickhouse_user": configured.clickhouse_user,
                "clickhouse_password": configured.clickhouse_password,
            },
            f"SIGFLOW_CLICKHOUSE_URL {url}",
        )
        return
    with tempfile.TemporaryDirectory(prefix="sigflow-bench-warehouse-") as data_dir:
        warehouse = EmbeddedWarehouse(Path(data_dir), "127.0.0.1", free_port())
        if say is not None:
            say(f"starting the embedded ClickHouse engine on {warehouse.url}")
        warehouse.start()
        try:
            yield Warehouse(
                {"clickhouse_url": warehouse.url}, f"embedded ClickHouse engine {warehouse.url}"
            )
        finally:
            warehouse.stop()


def database_for(prefix: str, name: str) -> str:
    """A database name of the run (`bench-1a2b3c4d`, `sigflow` → `bench_1a2b3c4d_sigflow`)."""
    return f"{prefix}_{name}".replace("-", "_")


async def drop_databases(settings: Settings, prefix: str) -> None:
    """Drop every database of the run (named by `database_for`)."""
    client = await connect(settings, database="")
    try:
        result = await client.query(
            "SELECT name FROM system.databases WHERE startsWith(name, {prefix:String})",
            parameters={"prefix": database_for(prefix, "")},
        )
        for (name,) in result.result_rows:
            if IDENTIFIER.match(name):  # spliced into DDL, as the migrations splice theirs
                await client.command(f"DROP DATABASE IF EXISTS {name}")
    finally:
        await client.close()
