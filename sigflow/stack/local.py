"""`sigflow stack up|down|status`: the local broker and warehouse as one unit.

The stack remembers what it started in ``<data_dir>/stack.json`` so that later commands
(and every role) know which broker runs: Tansu cannot serve idempotent producers, so
roles pointed at a local Tansu turn them off (`adjust_for_local_stack`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from rich.console import Console

from sigflow.exceptions import ConfigError
from sigflow.settings import BrokerKind, Settings
from sigflow.stack.kafka import KafkaBroker, java_available
from sigflow.stack.process import BackgroundProcess
from sigflow.stack.tansu import TansuBroker

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
WAREHOUSE_START_SECONDS = 60.0


class EmbeddedWarehouse:
    """The chdb-backed ClickHouse HTTP endpoint (`sigflow.stack.warehouse`) in the background."""

    def __init__(self, data_dir: Path, host: str, port: int) -> None:
        self.host, self.port = host, port
        argv = [
            sys.executable,
            "-m",
            "sigflow.stack.warehouse",
            "--path",
            str(data_dir / "warehouse"),
            "--host",
            host,
            "--port",
            str(port),
        ]
        self.process = BackgroundProcess("warehouse", data_dir / "run", argv)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = WAREHOUSE_START_SECONDS) -> None:
        """Start unless running; return once it answers HTTP."""
        if self.process.is_running():
            return
        self.process.start()
        try:
            self.process.wait_for_port(self.host, self.port, timeout)
        except Exception:
            self.process.stop(timeout=5)
            raise

    def stop(self) -> None:
        self.process.stop(timeout=30)

    def is_running(self) -> bool:
        return self.process.is_running()


@dataclass(frozen=True)
class StackStatus:
    """What runs now."""

    broker: str | None
    bootstrap: str
    broker_running: bool
    warehouse_url: str
    warehouse_running: bool
    data_dir: Path

    @property
    def up(self) -> bool:
        return self.broker_running and self.warehouse_running

    def describe(self) -> str:
        def state(running: bool) -> str:
            return "[green]running[/green]" if running else "[red]stopped[/red]"

        return (
            f"broker     {self.broker or '-':6} {self.bootstrap:22} {state(self.broker_running)}\n"
            f"warehouse  {'chdb':6} {self.warehouse_url:22} {state(self.warehouse_running)}\n"
            f"data       {self.data_dir}"
        )


def _local_port(address: str, what: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if host not in LOCAL_HOSTS or not port.isdigit():
        raise ConfigError(
            f"the local stack runs on this machine, but {what} is {address!r}; "
            "point it at 127.0.0.1:PORT or use your own Kafka/ClickHouse without `stack`"
        )
    return "127.0.0.1", int(port)


class LocalStack:
    """The broker and warehouse `sigflow stack` manages, found again via the data dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.state_file = self.data_dir / "stack.json"
        _, self.kafka_port = _local_port(settings.kafka_bootstrap, "SIGFLOW_KAFKA_BOOTSTRAP")
        url = urlsplit(settings.clickhouse_url)
        host, port = _local_port(f"{url.hostname}:{url.port or 8123}", "SIGFLOW_CLICKHOUSE_URL")
        self.warehouse = EmbeddedWarehouse(self.data_dir, host, port)

    def _broker(self, kind: Literal["kafka", "tansu"]) -> KafkaBroker | TansuBroker:
        if kind == "kafka":
            return KafkaBroker(
                self.data_dir / "kafka",
                port=self.kafka_port,
                controller_port=self.kafka_port + 1,
                version=self.settings.kafka_version,
            )
        return TansuBroker(self.data_dir / "tansu", port=self.kafka_port)

    def running_broker(self) -> Literal["kafka", "tansu"] | None:
        """Which broker the last `up` started, if it still runs."""
        try:
            kind = json.loads(self.state_file.read_text())["broker"]
        except (FileNotFoundError, KeyError, ValueError):
            return None
        if kind in ("kafka", "tansu") and self._broker(kind).is_running():
            return kind  # type: ignore[no-any-return]
        return None

    def status(self) -> StackStatus:
        kind = self.running_broker()
        return StackStatus(
            broker=kind,
            bootstrap=f"127.0.0.1:{self.kafka_port}",
            broker_running=kind is not None,
            warehouse_url=self.warehouse.url,
            warehouse_running=self.warehouse.is_running(),
            data_dir=self.data_dir,
        )

    def up(self, kind: BrokerKind, console: Console | None = None) -> StackStatus:
        """Start what is not running yet; `auto` picks Kafka when Java 17 is present."""
        console = console or Console(stderr=True)
        running = self.running_broker()
        wanted = ("kafka" if java_available() else "tansu") if kind == "auto" else kind
        if running is not None and running != wanted and kind != "auto":
            raise ConfigError(f"a {running} broker already runs; `sigflow stack down` first")
        if running is None:
            with console.status(f"starting {wanted} broker on 127.0.0.1:{self.kafka_port} ..."):
                self._broker(wanted).start()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps({"broker": wanted}))
        with console.status(f"starting warehouse on {self.warehouse.url} ..."):
            self.warehouse.start()
        return self.status()

    def down(self, console: Console | None = None) -> None:
        """Stop both; safe when nothing runs. Tansu's topics are gone, warehouse data stays."""
        console = console or Console(stderr=True)
        for kind in ("kafka", "tansu"):
            broker = self._broker(kind)  # type: ignore[arg-type]
            if broker.is_running():
                with console.status(f"stopping {kind} broker ..."):
                    broker.stop()
        if self.warehouse.is_running():
            with console.status("stopping warehouse ..."):
                self.warehouse.stop()
        self.state_file.unlink(missing_ok=True)


def adjust_for_local_stack(settings: Settings) -> Settings:
    """Turn off idempotent producers when the configured broker is the local Tansu."""
    try:
        stack = LocalStack(settings)
    except ConfigError:
        return settings  # not pointed at a local stack
    if stack.running_broker() == "tansu" and settings.kafka_idempotent_producer:
        return settings.model_copy(update={"kafka_idempotent_producer": False})
    return settings
