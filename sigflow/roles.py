"""Entry points of the long-running roles: processor, sink and API.

Each role prepares what it depends on (topics, migrations), exposes Prometheus metrics
when `metrics_port` is set, and shuts down cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn
from prometheus_client import start_http_server

from sigflow.kafka import ensure_topics
from sigflow.settings import Settings
from sinks.migrations import apply_migrations
from sinks.warehouse import connect, database_name

log = logging.getLogger(__name__)


def _serve_metrics(settings: Settings) -> None:
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.api_host)
        log.info("metrics served", extra={"port": settings.metrics_port})


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

    asyncio.run(ensure_topics(settings))
    _serve_metrics(settings)
    (settings.data_dir / "processor").mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()


def run_sink(settings: Settings) -> None:
    """Run the ClickHouse sink until SIGTERM/SIGINT, then flush, commit and return."""
    from sinks.runner import SinkRunner

    async def main() -> None:
        await ensure_topics(settings)
        await migrate(settings)
        runner = SinkRunner(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        await runner.run()

    _serve_metrics(settings)
    asyncio.run(main())


def run_api(settings: Settings) -> None:
    """Serve the API with uvicorn until SIGTERM/SIGINT."""
    from api.app import create_app
    from api.server import server_config

    config = server_config(create_app(settings), settings.api_host, settings.api_port)
    uvicorn.Server(config).run()
