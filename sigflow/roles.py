"""Entry points of the long-running roles: processor, sink and API.

Every role goes through `role_lifecycle`: a bounded wait for the services it needs
(`SIGFLOW_STARTUP_TIMEOUT_SECONDS`), then /metrics, /healthz and /readyz on
`SIGFLOW_METRICS_PORT` while it runs (the API serves them on its own port). Each role
prepares what it depends on (topics, migrations) and shuts down cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from sigflow.dependencies import Role, role_dependencies, wait_for_dependencies
from sigflow.health_server import Readiness, serve_health
from sigflow.kafka import ensure_topics
from sigflow.settings import Settings
from sinks.migrations import apply_migrations
from sinks.warehouse import connect, database_name

log = logging.getLogger(__name__)


@contextmanager
def role_lifecycle(settings: Settings, role: Role) -> Iterator[Readiness]:
    """Serve `role`'s health and metrics while it waits for its dependencies, then runs.

    /healthz answers during the wait, so a liveness probe does not kill a pod that is
    waiting for Kafka; /readyz stays 503 until the role calls `mark_started()` on the
    yielded `Readiness` once it can work (and its dependencies answer).
    """
    with serve_health(settings, role) as readiness:  # alive (not ready) while waiting
        wait_for_dependencies(role_dependencies(settings, role), settings.startup_timeout_seconds)
        yield readiness


async def migrate(settings: Settings) -> list[str]:
    """Apply pending warehouse migrations; return their names."""
    client = await connect(settings, database="")
    try:
        applied = await apply_migrations(client, database_name(settings))
    finally:
        await client.close()
    return [f"{m.version:04d}_{m.name}" for m in applied]


def run_processor(settings: Settings) -> None:
    """Run the Faust worker until SIGTERM/SIGINT (blocks; exits the process)."""
    from faust.worker import Worker

    from processors.app import create_app

    with role_lifecycle(settings, "process") as readiness:

        class ReadyWorker(Worker):  # type: ignore[misc]
            async def on_startup_finished(self) -> None:
                await super().on_startup_finished()
                readiness.mark_started()

        asyncio.run(ensure_topics(settings))
        (settings.data_dir / "processor").mkdir(parents=True, exist_ok=True)
        app = create_app(settings)
        worker = ReadyWorker(app, loglevel=settings.log_level.lower(), quiet=True)
        worker.execute_from_commandline()


def run_sink(settings: Settings) -> None:
    """Run the ClickHouse sink until SIGTERM/SIGINT, then flush, commit and return."""
    from sinks.runner import SinkRunner

    async def main(readiness: Readiness) -> None:
        await ensure_topics(settings)
        await migrate(settings)
        runner = SinkRunner(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        readiness.mark_started()
        await runner.run()

    with role_lifecycle(settings, "sink") as readiness:
        asyncio.run(main(readiness))


def run_api(settings: Settings) -> None:
    """Serve the API with uvicorn until SIGTERM/SIGINT (health and metrics on its port)."""
    from api.app import create_app

    wait_for_dependencies(role_dependencies(settings, "api"), settings.startup_timeout_seconds)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
    )
    uvicorn.Server(config).run()
