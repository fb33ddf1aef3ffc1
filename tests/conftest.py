"""Session fixtures: real Apache Kafka and the ClickHouse engine, started once.

If either cannot start, every test that needs it fails with the reason: a missing
broker is a failed run, never a skipped test. Set SIGFLOW_TEST_KAFKA_BOOTSTRAP and/or
SIGFLOW_TEST_CLICKHOUSE_URL to reuse services that already run (faster local loops).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from sigflow.settings import Settings, settings_env
from sigflow.stack.anvil import AnvilNode
from sigflow.stack.kafka import KafkaBroker
from sigflow.stack.local import EmbeddedWarehouse
from sigflow.stack.process import BackgroundProcess, free_port


class Service(Protocol):
    def start(self, *args: Any, **kwargs: Any) -> Any: ...
    def stop(self, *args: Any, **kwargs: Any) -> Any: ...


ServiceT = TypeVar("ServiceT", bound=Service)


@contextmanager
def running(service: ServiceT, name: str, **start_options: Any) -> Iterator[ServiceT]:
    """`service` started for as long as the block runs. If it cannot start, the test
    fails with the reason: a missing service is a failed run, never a skipped test."""
    try:
        service.start(**start_options)
    except Exception as exc:  # any reason at all is a failure here, never a skip
        pytest.fail(f"{name} did not start, so this test cannot run: {exc}", pytrace=False)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Apache Kafka broker (KRaft, from Maven Central jars)."""
    if existing := os.environ.get("SIGFLOW_TEST_KAFKA_BOOTSTRAP"):
        yield existing
        return
    port = free_port()
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), port=port, controller_port=free_port())
    with running(broker, "Apache Kafka"):
        yield broker.bootstrap


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the embedded ClickHouse engine behind its HTTP endpoint."""
    if existing := os.environ.get("SIGFLOW_TEST_CLICKHOUSE_URL"):
        yield existing
        return
    warehouse = EmbeddedWarehouse(tmp_path_factory.mktemp("warehouse"), "127.0.0.1", free_port())
    with running(warehouse, "the ClickHouse engine"):
        yield warehouse.url


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """An Apache Kafka of the test's own, for tests that stop and start it."""
    broker = KafkaBroker(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    with running(broker, "Apache Kafka"):
        yield broker


@pytest.fixture
def pipeline_settings(kafka_bootstrap: str, clickhouse_url: str, tmp_path: Path) -> Settings:
    """Settings isolated per test: own topic prefix, consumer groups and database."""
    run = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        clickhouse_url=clickhouse_url,
        topic_prefix=f"t{run}.",
        clickhouse_database=f"t{run}",
        processor_app_id=f"processor-{run}",
        sink_group_id=f"sink-{run}",
        data_dir=tmp_path / "data",
        sink_flush_seconds=0.3,
        log_json=False,
    )


class Roles:
    """sigflow roles running as real processes (`python -m sigflow ROLE`)."""

    def __init__(self, settings: Settings, run_dir: Path) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.processes: list[BackgroundProcess] = []

    def start(self, role: str) -> BackgroundProcess:
        process = BackgroundProcess(
            role,
            self.run_dir,
            [sys.executable, "-m", "sigflow", role],
            env=settings_env(self.settings),
        )
        process.start()
        self.processes.append(process)
        return process

    def dead(self) -> list[str]:
        """Names of roles that exited although nobody stopped them."""
        return [p.name for p in self.processes if not p.is_running()]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(60)}" for p in self.processes)

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop(timeout=20)


@pytest.fixture
def roles(pipeline_settings: Settings, tmp_path: Path) -> Iterator[Roles]:
    running = Roles(pipeline_settings, tmp_path / "roles")
    yield running
    running.stop_all()


@pytest.fixture(scope="session")
def anvil_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    """Foundry's anvil (npm, pinned in deploy/local/anvil) on a free port: a real EVM node."""
    with running(AnvilNode(tmp_path_factory.mktemp("anvil"), port=free_port()), "anvil") as node:
        yield node
