"""`sigflow bench api`: requests/s and latency of `GET /v1/prices/latest` under wrk.

Side by side in the same run, each in its own uvicorn process with the same settings
(`api.server.server_config`: uvloop, httptools, one worker): sigflow's full app (API-key
auth against a key in the embedded warehouse, rate limiter, request-id/access-log/metrics
middleware, gzip, the price book of `--symbols` symbols on 3 exchanges) and a bare
FastAPI app whose one endpoint returns a constant. wrk (Debian `wrk`, installed by
`make install`) drives each on loopback; repetitions alternate who goes first.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.report import BenchmarkError, BenchOptions, BenchResult, Measurement
from sigflow.settings import Settings, settings_env
from sigflow.stack.local import EmbeddedWarehouse
from sigflow.stack.process import free_port

NAME = "api"
BASELINE_NAME = "bare FastAPI endpoint returning a constant, same uvicorn settings"
DURATION_SECONDS = 5
CONNECTIONS = 16
EXCHANGES = ("binance", "coinbase", "kraken")
WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
WRK_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def sigflow_app() -> Any:
    """The real app with a filled price book (used inside the server process)."""
    from api.app import create_app
    from api.pricebook import LastTrade

    settings = Settings()
    app = create_app(settings)
    now = time.time_ns() // 1_000_000
    for i in range(int(os.environ["SIGFLOW_BENCH_SYMBOLS"])):
        for j, exchange in enumerate(EXCHANGES):
            trade = LastTrade(exchange, f"S{i}-USDT", 100.0 + i + j / 10, 1.0, "buy", now - j)
            app.state.price_book.update(trade)
    return app


def bare_app() -> Any:
    """The baseline: FastAPI with one constant endpoint (used inside the server process)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/constant")
    async def constant() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _serve(kind: str, port: int) -> None:
    import uvicorn

    from api.server import server_config

    app = sigflow_app() if kind == "sigflow" else bare_app()
    uvicorn.Server(server_config(app, "127.0.0.1", port)).run()


class _Server:
    """One uvicorn process of `kind`, started and awaited until it answers."""

    def __init__(self, kind: str, env: dict[str, str], path: str, headers: dict[str, str]):
        self.kind, self.env, self.path, self.headers = kind, env, path, headers
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def __enter__(self) -> _Server:
        code = f"from bench.api import _serve; _serve({self.kind!r}, {self.port})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                response = httpx.get(self.url, headers=self.headers, timeout=1)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if response.status_code != 200:
                raise BenchmarkError(
                    f"{self.kind} answered {response.status_code}: {response.text}"
                )
            return self
        raise BenchmarkError(f"the {self.kind} server did not start on port {self.port}")

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=20)


def wrk(url: str, headers: dict[str, str]) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of one wrk run; non-2xx answers fail the bench."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION_SECONDS}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    if "Non-2xx" in output:
        raise BenchmarkError(f"wrk saw error responses from {url}:\n{output}")
    rate = WRK_RATE.search(output)
    latency = {q: float(v) * UNIT_MS[unit] for q, v, unit in WRK_LATENCY.findall(output)}
    if rate is None or set(latency) != {"50", "99"}:
        raise BenchmarkError(f"cannot read wrk's output:\n{output}")
    return float(rate.group(1)), latency["50"], latency["99"]


async def _api_key(settings: Settings) -> str:
    from api.keys import ApiKeyStore
    from sigflow.roles import migrate
    from sinks.warehouse import connect

    await migrate(settings)
    client = await connect(settings)
    try:
        return (await ApiKeyStore(client, settings.clickhouse_database).create("bench")).token
    finally:
        await client.close()


def run(options: BenchOptions) -> BenchResult:
    """Serve both apps, load each with wrk `repeats` times, report medians."""
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed: run `make install` (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="sigflow-bench-") as data_dir:
        warehouse = EmbeddedWarehouse(Path(data_dir), "127.0.0.1", free_port())
        warehouse.start()
        try:
            settings = Settings.model_construct(
                **{
                    **Settings().model_dump(),
                    "clickhouse_url": warehouse.url,
                    "kafka_bootstrap": f"127.0.0.1:{free_port()}",  # none: the book is pre-filled
                    "api_rate_limit_per_minute": 1_000_000_000,
                    "log_level": "WARNING",
                }
            )
            key = asyncio.run(_api_key(settings))
            env = {**settings_env(settings), "SIGFLOW_BENCH_SYMBOLS": str(options.symbols)}
            servers = {
                "sigflow": _Server("sigflow", env, "/v1/prices/latest", {"X-API-Key": key}),
                "baseline": _Server("bare", env, "/constant", {}),
            }
            results: dict[str, list[tuple[float, float, float]]] = {"sigflow": [], "baseline": []}
            with servers["sigflow"], servers["baseline"]:
                for repetition in range(options.repeats):
                    order = list(results) if repetition % 2 == 0 else list(reversed(results))
                    for who in order:
                        results[who].append(wrk(servers[who].url, servers[who].headers))
                    options.say(
                        f"repetition {repetition + 1}/{options.repeats}: "
                        + ", ".join(f"{w} {results[w][-1][0]:,.0f} req/s" for w in results)
                    )
        finally:
            warehouse.stop()

    def measured(who: str, label: str) -> Measurement:
        runs = results[who]
        return Measurement(
            label,
            tuple(r[0] for r in runs),
            quantiles_ms={
                0.50: statistics.median(r[1] for r in runs),
                0.99: statistics.median(r[2] for r in runs),
            },
        )

    return BenchResult(
        bench=NAME,
        unit="requests/s",
        sigflow=measured(
            "sigflow",
            f"GET /v1/prices/latest ({options.symbols} symbols x {len(EXCHANGES)} exchanges), "
            "API key, full middleware",
        ),
        baseline=measured("baseline", BASELINE_NAME),
        baseline_name=BASELINE_NAME,
        title="GET /v1/prices/latest under wrk on loopback",
        latency_label="request",
        parameters={
            "wrk": f"1 thread, {CONNECTIONS} connections, {DURATION_SECONDS}s",
            "repeats": options.repeats,
            "symbols": options.symbols,
        },
    )
