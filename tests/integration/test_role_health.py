"""Every role, run as a real process, serves /healthz, /readyz and /metrics on its
metrics port, and refuses to start (one line, non-zero) when a dependency never answers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from sigflow.settings import Settings, settings_env
from sigflow.stack.kafka import KafkaBroker
from sigflow.stack.process import free_port
from tests.conftest import Roles
from tests.integration.test_cli import one_line, run_sigflow

ROLE_METRICS = {"sink": "sigflow_sink_rows_total", "process": "sigflow_processor_trades_total"}


async def wait_ready(url: str, roles: Roles, timeout: float = 90.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            assert not roles.dead(), f"role exited:\n{roles.logs()}"
            try:
                response = await client.get(url)
                if response.status_code == 200:
                    return response
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{url} never ready:\n{roles.logs()}"
            await asyncio.sleep(0.3)


@pytest.mark.integration
@pytest.mark.parametrize("role", sorted(ROLE_METRICS))
async def test_role_serves_health_readiness_and_metrics_on_its_port(
    role: str, pipeline_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    settings = pipeline_settings.model_copy(update={"metrics_port": port})
    roles = Roles(settings, tmp_path / "roles")
    roles.start(role)
    base = f"http://127.0.0.1:{port}"
    try:
        ready = await wait_ready(f"{base}/readyz", roles)
        assert ready.json()["role"] == role
        assert all(ready.json()["checks"].values()), ready.json()
        async with httpx.AsyncClient(timeout=5) as client:
            alive = await client.get(f"{base}/healthz")
            metrics = await client.get(f"{base}/metrics")
            missing = await client.get(f"{base}/nope")
    finally:
        roles.stop_all()
    assert alive.status_code == 200
    assert alive.json() == {"status": "ok", "role": role}
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert ROLE_METRICS[role] in metrics.text
    assert missing.status_code == 404


UNREACHABLE = {"SIGFLOW_STARTUP_TIMEOUT_SECONDS": "1"}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("command", "variable", "dependency"),
    [
        ("process", "SIGFLOW_KAFKA_BOOTSTRAP", "kafka"),
        ("sink", "SIGFLOW_KAFKA_BOOTSTRAP", "kafka"),
        ("sink", "SIGFLOW_CLICKHOUSE_URL", "clickhouse"),
        ("api", "SIGFLOW_CLICKHOUSE_URL", "clickhouse"),
        ("migrate", "SIGFLOW_CLICKHOUSE_URL", "clickhouse"),
    ],
)
async def test_role_exits_with_one_line_naming_a_dependency_that_never_answers(
    command: str, variable: str, dependency: str, pipeline_settings: Settings, tmp_path: Path
) -> None:
    dead_port = free_port()  # nothing listens there
    address = f"127.0.0.1:{dead_port}"
    env = {
        **settings_env(pipeline_settings),
        **UNREACHABLE,
        variable: address if dependency == "kafka" else f"http://{address}",
    }
    started = time.monotonic()
    result = await asyncio.to_thread(run_sigflow, command, env=env, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    title = {"kafka": "Kafka", "clickhouse": "ClickHouse"}[dependency]
    assert one_line(last).startswith(f"error: cannot reach {title} at "), result.stderr
    assert address in last
    assert "SIGFLOW_STARTUP_TIMEOUT_SECONDS" in last
    assert elapsed < 15, "the start-up wait is bounded by the setting"


@pytest.mark.integration
# aiokafka leaves the sockets of a broker that vanished to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_the_processor_exits_within_its_shutdown_timeout_while_kafka_is_away(
    own_broker: KafkaBroker, pipeline_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    settings = pipeline_settings.model_copy(
        update={
            "kafka_bootstrap": own_broker.bootstrap,
            "metrics_port": port,
            "shutdown_timeout_seconds": 3.0,
        }
    )
    roles = Roles(settings, tmp_path / "roles")
    processor = roles.start("process")
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", roles)
        await asyncio.to_thread(own_broker.stop)
        await asyncio.sleep(2)  # its consumer is now retrying fetches
        started = time.monotonic()
        await asyncio.to_thread(processor.stop, 30)
        took = time.monotonic() - started
    finally:
        roles.stop_all()
    log = processor.log_tail(200)
    assert took < 3.0 + 5.0, f"stopped after {took:.1f} s:\n{log}"
    assert processor.exit_code == 1, log
    assert "did not stop within 3 s of SIGTERM" in log
