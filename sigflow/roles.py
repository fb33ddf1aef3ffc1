"""Entry points of the long-running roles: processor, sink, webhook dispatcher, API,
and the exchange and chain feeds.

Each role prepares what it depends on (topics, migrations), exposes Prometheus metrics
when `metrics_port` is set, and shuts down cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
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


def run_exchange_feeds(settings: Settings, exchanges: list[str], symbols: list[str]) -> None:
    """Follow exchange trade feeds until SIGTERM/SIGINT, then close sockets and flush."""
    from ingest.exchanges.feed import ExchangeFeed
    from ingest.exchanges.runner import run_feeds, select_adapters
    from ingest.producer import EventProducer

    adapters = select_adapters(settings, exchanges, symbols)  # bad input fails first

    async def main() -> None:
        producer = EventProducer(settings, component="ingest.exchanges")
        feeds = [ExchangeFeed(adapter, settings, producer) for adapter in adapters]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with producer:
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

    _serve_metrics(settings)
    asyncio.run(main())


def run_dispatcher(settings: Settings) -> None:
    """Deliver alerts to webhooks until SIGTERM/SIGINT, then finish attempts and commit."""
    from sinks.webhooks.dispatcher import WebhookDispatcher

    async def main() -> None:
        await ensure_topics(settings)
        await migrate(settings)
        dispatcher = WebhookDispatcher(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, dispatcher.stop)
        await dispatcher.run()

    _serve_metrics(settings)
    asyncio.run(main())


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

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, ingestor.stop)
        await ingestor.run()

    _serve_metrics(settings)
    asyncio.run(main())


def run_api(settings: Settings) -> None:
    """Serve the API with uvicorn until SIGTERM/SIGINT."""
    from api.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
    )
    uvicorn.Server(config).run()
