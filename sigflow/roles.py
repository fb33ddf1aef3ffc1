"""Entry points of the long-running roles: processor, sink, webhook dispatcher, API,
and the exchange and chain feeds.

Every role goes through `role_lifecycle`: a bounded wait for the services it needs
(`SIGFLOW_STARTUP_TIMEOUT_SECONDS`), then /metrics, /healthz and /readyz on
`SIGFLOW_METRICS_PORT` while it runs (the API serves them on its own port). Each role
prepares what it depends on (topics, migrations) and shuts down cleanly on SIGTERM/SIGINT.
The lifecycle also tags the process's log lines with the role and sets up tracing
(`SIGFLOW_TRACING`) for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from sigflow.dependencies import Role, role_dependencies, wait_for_dependencies
from sigflow.health_server import Readiness, serve_health
from sigflow.kafka import ensure_topics
from sigflow.logs import bind_log_fields
from sigflow.settings import Settings
from sigflow.tracing import configure_tracing, shutdown_tracing
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
    bind_log_fields(role=role)
    configure_tracing(settings, role)
    try:
        with serve_health(settings, role) as readiness:  # alive (not ready) while waiting
            wait_for_dependencies(
                role_dependencies(settings, role), settings.startup_timeout_seconds
            )
            log.info("role starting")
            yield readiness
    finally:
        shutdown_tracing()  # export the spans still pending
        log.info("role stopped")


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
    from processors.app import DeadlineWorker, create_app, ensure_processor_topics, faust_worker

    with role_lifecycle(settings, "process") as readiness:

        class ReadyWorker(DeadlineWorker):
            async def on_startup_finished(self) -> None:
                await super().on_startup_finished()
                readiness.mark_started()

        (settings.data_dir / "processor").mkdir(parents=True, exist_ok=True)
        app = create_app(settings)
        asyncio.run(ensure_processor_topics(settings, app))
        faust_worker(app, settings, ReadyWorker).execute_from_commandline()


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


def run_exchange_feeds(settings: Settings, exchanges: list[str], symbols: list[str]) -> None:
    """Follow exchange trade feeds until SIGTERM/SIGINT, then close sockets and flush."""
    from ingest.exchanges.feed import ExchangeFeed
    from ingest.exchanges.runner import run_feeds, select_adapters
    from ingest.producer import EventProducer

    adapters = select_adapters(settings, exchanges, symbols)  # bad input fails first

    async def main(readiness: Readiness) -> None:
        producer = EventProducer(settings, component="ingest.exchanges")
        feeds = [ExchangeFeed(adapter, settings, producer) for adapter in adapters]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with producer:
            readiness.mark_started()
            running = asyncio.create_task(run_feeds(feeds))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (running, stopping):
                task.cancel()
            await asyncio.gather(stopping, return_exceptions=True)
            with contextlib.suppress(asyncio.CancelledError):  # stopped by a signal
                await running
            await producer.flush()
        log.info("exchange feeds stopped", extra={"exchanges": exchanges})

    with role_lifecycle(settings, "ingest") as readiness:
        asyncio.run(main(readiness))


def run_dispatcher(settings: Settings) -> None:
    """Deliver alerts to webhooks until SIGTERM/SIGINT, then finish attempts and commit."""
    from sinks.webhooks.dispatcher import WebhookDispatcher

    async def main(readiness: Readiness) -> None:
        await ensure_topics(settings)
        await migrate(settings)
        dispatcher = WebhookDispatcher(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, dispatcher.stop)
        readiness.mark_started()
        await dispatcher.run()

    with role_lifecycle(settings, "dispatch") as readiness:
        asyncio.run(main(readiness))


def run_chain_ingest(settings: Settings, *, from_block: int | None = None) -> None:
    """Follow an EVM chain into `onchain.*` until SIGTERM/SIGINT, then flush and return."""
    from ingest.chain.ingestor import ChainIngestor
    from ingest.chain.tokens import load_token_list
    from sigflow.exceptions import ConfigError

    rpc_url = settings.chain_rpc_url.get_secret_value()
    missing = [
        option
        for option, value in (
            ("--rpc-url / SIGFLOW_CHAIN_RPC_URL", rpc_url),
            ("--chain-id / SIGFLOW_CHAIN_ID", settings.chain_id),
            ("--tokens / SIGFLOW_CHAIN_TOKENS", settings.chain_tokens),
        )
        if not value
    ]
    if missing or settings.chain_id is None or settings.chain_tokens is None:
        raise ConfigError(f"ingest chain needs {', '.join(missing)}")
    ingestor = ChainIngestor(
        settings,
        rpc_url=rpc_url,
        chain_id=settings.chain_id,
        tokens=load_token_list(settings.chain_tokens),
        from_block=from_block,
    )

    async def main(readiness: Readiness) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, ingestor.stop)
        readiness.mark_started()
        await ingestor.run()

    with role_lifecycle(settings, "ingest") as readiness:
        asyncio.run(main(readiness))


def run_api(settings: Settings) -> None:
    """Serve the API with uvicorn until SIGTERM/SIGINT (health and metrics on its port)."""
    from api.app import create_app
    from api.server import server_config

    bind_log_fields(role="api")
    wait_for_dependencies(role_dependencies(settings, "api"), settings.startup_timeout_seconds)
    config = server_config(
        create_app(settings),
        settings.api_host,
        settings.api_port,
        # HTTPS straight from uvicorn when a certificate is configured (None: plain HTTP).
        ssl_certfile=settings.api_ssl_certfile,
        ssl_keyfile=settings.api_ssl_keyfile,
        ssl_keyfile_password=settings.api_ssl_keyfile_password.get_secret_value() or None,
    )
    uvicorn.Server(config).run()
