"""`sigflow demo`: the whole pipeline on this machine, fed with the bundled sample.

Starts the local stack if it is not up (Tansu: no Java needed), runs the processor,
sink and API as child processes, replays real BTC-USD hours as synthetic trades, waits
until every closed candle is in ClickHouse, and prints what was produced.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from clickhouse_connect.driver.asyncclient import AsyncClient
from rich.console import Console
from rich.table import Table

from api.keys import ApiKeyStore
from ingest.replay import (
    SAMPLE_EXCHANGE,
    SAMPLE_SYMBOL,
    replay_sample,
    sample_candles,
    sample_trade_times,
)
from sigflow.exceptions import ConfigError, StackError
from sigflow.kafka import consumer_lag, ensure_topics
from sigflow.roles import migrate
from sigflow.settings import BrokerKind, Settings, settings_env
from sigflow.stack import LocalStack, adjust_for_local_stack
from sigflow.stack.process import BackgroundProcess, port_in_use
from sinks.warehouse import connect, database_name

ROLES = ("sink", "process", "api")
CANDLES_TIMEOUT_SECONDS = 300.0
MINUTE_MS = 60_000


@dataclass(frozen=True)
class SampleWindow:
    """The minute candles the sample must produce: all but the newest (still open)."""

    first_ms: int
    last_open_ms: int
    closed_candles: int


def expected_window(candles: list[Any], trades_per_hour: int) -> SampleWindow:
    """Count the distinct trade minutes of the sample, computed from its own columns."""
    ts = sample_trade_times(candles, trades_per_hour)
    minutes = np.unique(ts // MINUTE_MS)
    return SampleWindow(int(ts.min()), int(minutes[-1]) * MINUTE_MS, len(minutes) - 1)


class DemoRoles:
    """The processor, sink and API as child processes with logs under the data dir."""

    def __init__(self, settings: Settings) -> None:
        env = settings_env(settings)
        run_dir = settings.data_dir / "demo"
        self.processes = [
            BackgroundProcess(
                f"demo-{role}", run_dir, [sys.executable, "-m", "sigflow", role], env=env
            )
            for role in ROLES
        ]

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def check_alive(self) -> None:
        for process in self.processes:
            if not process.is_running():
                tail = process.log_tail(20)
                raise StackError(f"{process.name} exited; end of {process.log_file}:\n{tail}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=20)


async def _count(client: AsyncClient, sql: str, parameters: dict[str, Any] | None = None) -> int:
    return int((await client.query(sql, parameters=parameters)).result_rows[0][0])


async def _wait_for_candles(
    settings: Settings, window: SampleWindow, roles: DemoRoles, console: Console
) -> float:
    db = database_name(settings)
    sql = (
        f"SELECT count() FROM {db}.candles FINAL "
        "WHERE exchange = {e:String} AND symbol = {s:String} AND interval = '1m' "
        "AND open_time >= fromUnixTimestamp64Milli({a:Int64}) "
        "AND open_time < fromUnixTimestamp64Milli({b:Int64})"
    )
    params = {
        "e": SAMPLE_EXCHANGE,
        "s": SAMPLE_SYMBOL,
        "a": window.first_ms - MINUTE_MS,
        "b": window.last_open_ms,
    }
    started = time.monotonic()
    trades = settings.topic("trades")
    outputs = [trades, *(settings.topic(t) for t in ("candles", "indicators", "signals"))]
    client = await connect(settings)
    try:
        with console.status("waiting for the processor and sink to catch up ...") as status:
            while True:
                processor_lag = await consumer_lag(settings, settings.processor_app_id, [trades])
                sink_lag = await consumer_lag(settings, settings.sink_group_id, outputs)
                done = await _count(client, sql, params)
                status.update(
                    f"candles in ClickHouse: {done:,} / {window.closed_candles:,} "
                    f"(processor lag {processor_lag}, sink lag {sink_lag})"
                )
                if processor_lag == 0 and sink_lag == 0 and done >= window.closed_candles:
                    return time.monotonic() - started
                roles.check_alive()
                if time.monotonic() - started > CANDLES_TIMEOUT_SECONDS:
                    raise StackError(
                        f"only {done} of {window.closed_candles} candles arrived in time; "
                        f"see the logs in {settings.data_dir / 'demo'}"
                    )
                await asyncio.sleep(0.5)
    finally:
        await client.close()


async def _wait_for_api(base_url: str, roles: DemoRoles) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        for _ in range(120):
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            roles.check_alive()
            await asyncio.sleep(0.25)
    raise StackError(f"the API did not answer on {base_url}")


async def _report(
    settings: Settings, window: SampleWindow, base_url: str, console: Console
) -> None:
    db = database_name(settings)
    table = Table(title="rows in ClickHouse (deduplicated: FINAL)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    client = await connect(settings)
    try:
        for name in ("trades", "candles", "indicators", "signals"):
            rows = await _count(client, f"SELECT count() FROM {db}.{name} FINAL")
            table.add_row(f"{db}.{name}", f"{rows:,}")
            if name == "candles":  # one row per interval under the total
                for interval in settings.candle_intervals:
                    rows = await _count(
                        client,
                        f"SELECT count() FROM {db}.candles FINAL WHERE interval = {{i:String}}",
                        {"i": interval},
                    )
                    table.add_row(f"  {interval}", f"{rows:,}")
        # A fresh key for the demo's own API calls, stored hashed like any other.
        api_key = (await ApiKeyStore(client, db).create("demo")).token
    finally:
        await client.close()
    console.print(table)
    series = {"exchange": SAMPLE_EXCHANGE, "symbol": SAMPLE_SYMBOL, "interval": "1m"}
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": api_key}) as http:
        candles = await http.get(
            "/v1/candles", params={**series, "start": window.last_open_ms - 3 * MINUTE_MS}
        )
        indicators = await http.get(
            "/v1/indicators", params={**series, "start": window.last_open_ms - MINUTE_MS}
        )
        signals = await http.get("/v1/signals", params={**series, "limit": 3})
    for response in (candles, indicators, signals):
        response.raise_for_status()
        console.print(f"GET {response.url}")
        for point in response.json():
            console.print_json(data=point)


def run_demo(
    settings: Settings,
    *,
    once: bool,
    days: int,
    trades_per_hour: int,
    broker: BrokerKind,
    console: Console,
) -> None:
    """Run the demo until Ctrl-C (or, with `once`, the summary); then stop what it started."""
    # SIGTERM unwinds like Ctrl-C, so the roles and the stack are stopped below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if port_in_use(settings.api_host, settings.api_port):
        raise ConfigError(f"port {settings.api_port} is taken; set SIGFLOW_API_PORT to a free port")
    stack = LocalStack(settings)
    started_stack = not stack.status().up
    if started_stack:
        console.print(stack.up(broker, console=console).describe())
    settings = adjust_for_local_stack(settings)
    roles = DemoRoles(settings)
    base_url = f"http://{settings.api_host}:{settings.api_port}"
    try:
        applied = asyncio.run(migrate(settings))
        console.print(f"migrations applied: {', '.join(applied) or 'none pending'}")
        asyncio.run(ensure_topics(settings))
        window = expected_window(sample_candles(settings, days), trades_per_hour)
        roles.start()
        asyncio.run(_wait_for_api(base_url, roles))
        summary = asyncio.run(
            replay_sample(settings, days=days, trades_per_hour=trades_per_hour, console=console)
        )
        console.print(str(summary))
        seconds = asyncio.run(_wait_for_candles(settings, window, roles, console))
        console.print(
            f"{window.closed_candles:,} closed 1m candles in ClickHouse, "
            f"{seconds:.1f} s after the replay"
        )
        asyncio.run(_report(settings, window, base_url, console))
        if once:
            return
        console.print(
            f"API on {base_url} (docs: {base_url}/docs); get a key with "
            "`sigflow api-key create NAME` and send it as X-API-Key. Ctrl-C to stop"
        )
        while True:
            roles.check_alive()
            time.sleep(1)
    finally:
        roles.stop()
        if started_stack:
            stack.down(console=console)
