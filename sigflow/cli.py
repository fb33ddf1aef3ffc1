"""The `sigflow` command line: the local stack, each role, the demo and the contract."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sigflow.exceptions import SigflowError
from sigflow.logs import configure_logging
from sigflow.settings import BrokerKind, Settings, load_settings

app = typer.Typer(
    help="sigflow: streaming crypto signals from exchange trades and on-chain events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(help="The local broker + warehouse, running in the background.")
ingest_app = typer.Typer(help="Put trades and on-chain events on their topics.")
schemas_app = typer.Typer(help="The published contract of every topic.")
api_key_app = typer.Typer(help="API keys for the HTTP API (hashed at rest).")
app.add_typer(stack_app, name="stack")
app.add_typer(ingest_app, name="ingest")
app.add_typer(schemas_app, name="schemas")
app.add_typer(api_key_app, name="api-key")
webhooks_app = typer.Typer(help="Alert webhook subscriptions and their deliveries.")
app.add_typer(webhooks_app, name="webhooks")

console = Console(stderr=True, soft_wrap=True)  # messages stay one line in logs
T = TypeVar("T")


def cli_settings() -> Settings:
    """Settings from the environment, adjusted to a running local stack's broker."""
    from sigflow.stack import adjust_for_local_stack

    settings = adjust_for_local_stack(load_settings())
    configure_logging(settings.log_level, json=settings.log_json)
    return settings


@stack_app.command("up")
def stack_up(
    broker: Annotated[
        BrokerKind | None,
        typer.Option(help="kafka (Apache Kafka, needs Java 17), tansu (in-memory), auto."),
    ] = None,
) -> None:
    """Start the local broker and warehouse in the background (until `stack down`)."""
    from sigflow.stack import LocalStack

    settings = cli_settings()
    status = LocalStack(settings).up(broker or settings.broker, console=console)
    console.print(status.describe())


@stack_app.command("down")
def stack_down() -> None:
    """Stop the local broker and warehouse (warehouse data stays on disk)."""
    from sigflow.stack import LocalStack

    LocalStack(cli_settings()).down(console=console)


@stack_app.command("status")
def stack_status() -> None:
    """Show what runs; exit 1 if the stack is not up."""
    from sigflow.stack import LocalStack

    status = LocalStack(cli_settings()).status()
    console.print(status.describe())
    raise typer.Exit(0 if status.up else 1)


@app.command()
def demo(
    once: Annotated[
        bool, typer.Option("--once", help="Process the bundled data, print a summary, exit.")
    ] = False,
    days: Annotated[int, typer.Option(min=1, help="Days of real BTC-USD hours to replay.")] = 3,
    trades_per_hour: Annotated[
        int, typer.Option(min=4, help="Synthetic trades inside each real hourly candle.")
    ] = 600,
    broker: Annotated[
        BrokerKind, typer.Option(help="Broker to start if the stack is not up yet.")
    ] = "tansu",
) -> None:
    """Run everything on the local stack: replay bundled data through every role."""
    from sigflow.demo import run_demo

    run_demo(
        cli_settings(),
        once=once,
        days=days,
        trades_per_hour=trades_per_hour,
        broker=broker,
        console=console,
    )


@ingest_app.command("replay")
def ingest_replay(
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV, JSONL or Parquet.")
    ],
) -> None:
    """Publish trades from a file (exchange, symbol, trade_id, price, size, side, ts)."""
    from ingest.replay import replay_file

    summary = asyncio.run(replay_file(cli_settings(), path, console=console))
    console.print(str(summary), markup=False)


@ingest_app.command("sample")
def ingest_sample(
    days: Annotated[int, typer.Option(min=1, help="Days of real BTC-USD hours to replay.")] = 3,
    trades_per_hour: Annotated[int, typer.Option(min=4)] = 600,
) -> None:
    """Publish synthetic trades built inside real BTC-USD hourly candles."""
    from ingest.replay import replay_sample

    summary = asyncio.run(
        replay_sample(cli_settings(), days=days, trades_per_hour=trades_per_hour, console=console)
    )
    console.print(str(summary), markup=False)


@ingest_app.command("exchanges")
def ingest_exchanges(
    exchange: Annotated[
        str | None,
        typer.Option(help="Comma-separated exchange ids (default: SIGFLOW_EXCHANGES)."),
    ] = None,
    symbols: Annotated[
        str | None,
        typer.Option(help="Comma-separated BASE-QUOTE symbols (default: SIGFLOW_EXCHANGE_SYMBOLS)"),
    ] = None,
) -> None:
    """Follow live spot trades from exchanges' WebSocket APIs until Ctrl-C/SIGTERM."""
    from sigflow.roles import run_exchange_feeds

    settings = cli_settings()
    run_exchange_feeds(
        settings,
        _csv(exchange) if exchange is not None else settings.exchanges,
        _csv(symbols) if symbols is not None else settings.exchange_symbols,
    )


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


@ingest_app.command("chain")
def ingest_chain(
    rpc_url: Annotated[
        str | None,
        typer.Option(help="EVM JSON-RPC URL (default: SIGFLOW_CHAIN_RPC_URL).", show_default=False),
    ] = None,
    chain_id: Annotated[
        int | None,
        typer.Option(min=1, help="Chain id the node must serve (default: SIGFLOW_CHAIN_ID)."),
    ] = None,
    tokens: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="TOML/JSON token list: address, symbol, decimals (default: SIGFLOW_CHAIN_TOKENS).",
        ),
    ] = None,
    from_block: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="First block when nothing was published for this chain yet (default: head "
            "minus the confirmation depth); a restart resumes from the topics instead.",
        ),
    ] = None,
    confirmations: Annotated[
        int | None,
        typer.Option(min=1, help="Confirmation depth (default: SIGFLOW_CHAIN_CONFIRMATIONS)."),
    ] = None,
) -> None:
    """Follow an EVM chain: blocks to `onchain.blocks`, ERC-20 transfers to `onchain.transfers`."""
    from sigflow.roles import run_chain_ingest

    settings = cli_settings()
    update: dict[str, object] = {
        name: value
        for name, value in (
            ("chain_rpc_url", rpc_url),
            ("chain_id", chain_id),
            ("chain_tokens", tokens),
            ("chain_confirmations", confirmations),
        )
        if value is not None
    }
    fields = {name: getattr(settings, name) for name in Settings.model_fields}
    run_chain_ingest(Settings.model_validate({**fields, **update}), from_block=from_block)


@app.command()
def process() -> None:
    """Run the Faust stream processor (candles) until Ctrl-C."""
    from sigflow.roles import run_processor

    run_processor(cli_settings())


@app.command()
def sink() -> None:
    """Run the ClickHouse sink until Ctrl-C (applies migrations first)."""
    from sigflow.roles import run_sink

    run_sink(cli_settings())


@app.command()
def api() -> None:
    """Serve the HTTP API until Ctrl-C."""
    from sigflow.roles import run_api

    run_api(cli_settings())


@app.command()
def migrate() -> None:
    """Apply pending ClickHouse migrations."""
    from sigflow.dependencies import role_dependencies, wait_for_dependencies
    from sigflow.roles import migrate as apply

    settings = cli_settings()
    wait_for_dependencies(role_dependencies(settings, "migrate"), settings.startup_timeout_seconds)
    applied = asyncio.run(apply(settings))
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


@app.command()
def bench(
    name: Annotated[
        str | None,
        typer.Argument(help="Benchmark to run; leave out to list the registered ones."),
    ] = None,
    trades: Annotated[int, typer.Option(min=1, help="Trades fed to each path.")] = 500_000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the synthetic trades.")] = 0,
    repeats: Annotated[
        int, typer.Option(min=1, help="Timed repetitions per path; the median is reported.")
    ] = 5,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Records per micro-batch (the processor's default).")
    ] = Settings.model_fields["processor_batch_size"].default,
    symbols: Annotated[
        int, typer.Option(min=1, help="Distinct symbols (keys) the trades spread over.")
    ] = 8,
    event_rate: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Trades per second of event time in the synthetic stream: with 8 symbols, "
            "100 makes ~12 trades per 1 s candle (a replay far faster than real time); "
            "the rate a worker keeps up with live means one candle per key and second. "
            "Default: the benchmark's own.",
        ),
    ] = None,
) -> None:
    """Measure sigflow against a baseline in the same run: a table, then one JSON line.

    Benchmarks come from the `bench.BENCHMARKS` registry; without NAME, lists them.
    """
    from bench import BENCHMARKS, BenchOptions
    from bench.report import print_report
    from sigflow.exceptions import ConfigError

    if name is None:
        for known, registered in BENCHMARKS.items():
            summary = (registered.__doc__ or "").strip().splitlines()[0]
            typer.echo(f"{known:<12} {summary}")
        return
    runner = BENCHMARKS.get(name)
    if runner is None:
        raise ConfigError(f"unknown benchmark {name!r}: choose one of {', '.join(BENCHMARKS)}")
    options = BenchOptions(
        trades=trades,
        seed=seed,
        repeats=repeats,
        batch_size=batch_size,
        symbols=symbols,
        event_rate=event_rate,
        progress=console.print,
    )
    # Report on stdout (its last line is the JSON); progress goes to stderr.
    print_report(runner(options), Console())


@api_key_app.command("create")
def api_key_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
) -> None:
    """Create an API key; it is printed once and stored only as a hash."""

    key = asyncio.run(_with_key_store(cli_settings(), lambda store: store.create(name)))
    console.print(f"created key {key.key_id} for {name!r}; keep it now, it is not shown again:")
    typer.echo(key.token)


@api_key_app.command("list")
def api_key_list() -> None:
    """List API keys (ids and names, never secrets)."""
    for key_id, name, revoked in asyncio.run(
        _with_key_store(cli_settings(), lambda store: store.all_keys())
    ):
        typer.echo(f"{key_id}  {name}{'  (revoked)' if revoked else ''}")


@api_key_app.command("revoke")
def api_key_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke an API key (takes effect within 10 s on running APIs)."""
    from sigflow.exceptions import ConfigError

    if not asyncio.run(_with_key_store(cli_settings(), lambda store: store.revoke(key_id))):
        raise ConfigError(f"no API key with id {key_id!r}")
    console.print(f"revoked {key_id}")


async def _with_key_store(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run `action` on the key store (migrating first, so the table exists)."""
    from api.keys import ApiKeyStore
    from sigflow.roles import migrate
    from sinks.warehouse import connect, database_name

    await migrate(settings)
    client = await connect(settings)
    try:
        return await action(ApiKeyStore(client, database_name(settings)))
    finally:
        await client.close()


# ---- webhooks -----------------------------------------------------------------------


@app.command()
def dispatch() -> None:
    """Deliver alerts to webhook subscribers until Ctrl-C (applies migrations first)."""
    from sigflow.roles import run_dispatcher

    run_dispatcher(cli_settings())


def _comma_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Argument(help="http(s) URL that receives the POSTs.")],
    kinds: Annotated[
        str | None, typer.Option(help="Alert kinds, comma separated (default: all).")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Symbols like BTC-USDT, comma separated (default: all).")
    ] = None,
    min_severity: Annotated[
        str, typer.Option(help="Lowest severity delivered: info, warning or critical.")
    ] = "info",
) -> None:
    """Subscribe a URL to alerts; prints its signing secret once."""
    created = asyncio.run(
        _with_webhooks(
            cli_settings(),
            lambda store, _: store.create(
                url,
                kinds=_comma_list(kinds),
                symbols=_comma_list(symbols),
                min_severity=min_severity,  # type: ignore[arg-type]  # checked by the store
            ),
        )
    )
    console.print(
        f"created webhook subscription {created.subscription.subscription_id} for {url}; "
        "its signing secret is shown once:"
    )
    typer.echo(created.secret)


@webhooks_app.command("list")
def webhooks_list() -> None:
    """List subscriptions: id, state, URL and filters (never secrets)."""
    for sub in asyncio.run(_with_webhooks(cli_settings(), lambda store, _: store.all())):
        state = "enabled" if sub.enabled else f"disabled ({sub.disabled_reason or 'by hand'})"
        filters = (
            f"kinds={','.join(sub.kinds) or '*'} symbols={','.join(sub.symbols) or '*'} "
            f"min_severity={sub.min_severity}"
        )
        typer.echo(f"{sub.subscription_id}  {state}  {sub.url}  {filters}")


def _set_enabled(subscription_id: str, enabled: bool) -> None:
    asyncio.run(
        _with_webhooks(
            cli_settings(),
            lambda store, _: store.set_enabled(subscription_id, enabled, "disabled by hand"),
        )
    )
    console.print(f"{'enabled' if enabled else 'disabled'} {subscription_id}")


@webhooks_app.command("disable")
def webhooks_disable(subscription_id: Annotated[str, typer.Argument(help="Its id.")]) -> None:
    """Stop delivering to a subscription (pending retries to it are dead-lettered)."""
    _set_enabled(subscription_id, False)


@webhooks_app.command("enable")
def webhooks_enable(subscription_id: Annotated[str, typer.Argument(help="Its id.")]) -> None:
    """Deliver to a subscription again (its URL is checked again first)."""
    _set_enabled(subscription_id, True)


@webhooks_app.command("rotate-secret")
def webhooks_rotate_secret(
    subscription_id: Annotated[str, typer.Argument(help="Its id.")],
    grace_seconds: Annotated[
        float | None,
        typer.Option(help="How long the old secret keeps signing too (default from settings)."),
    ] = None,
) -> None:
    """Give a subscription a new secret; prints it once. Both sign during the grace period."""
    settings = cli_settings()
    grace = (
        settings.webhook_secret_rotation_grace_seconds if grace_seconds is None else grace_seconds
    )
    secret = asyncio.run(
        _with_webhooks(settings, lambda store, _: store.rotate_secret(subscription_id, grace))
    )
    console.print(
        f"rotated the secret of {subscription_id}; the old one also signs for {grace:g} s. "
        "New secret, shown once:"
    )
    typer.echo(secret)


@webhooks_app.command("generate-key")
def webhooks_generate_key() -> None:
    """Print a new random key for SIGFLOW_WEBHOOK_SECRETS_KEY (seals secrets at rest)."""
    from sinks.webhooks.secret_box import generate_key

    typer.echo(generate_key())


@webhooks_app.command("reseal-secrets")
def webhooks_reseal_secrets() -> None:
    """Write every subscription's secrets again under the first SIGFLOW_WEBHOOK_SECRETS_KEY
    key: after setting it, or after putting a new key first to rotate."""
    from sinks.webhooks.secret_box import SecretBox

    settings = cli_settings()
    count = asyncio.run(_with_webhooks(settings, lambda store, _: store.reseal()))
    how = (
        "sealed with the first key"
        if SecretBox.from_settings(settings).seals
        else "stored plain (SIGFLOW_WEBHOOK_SECRETS_KEY is not set)"
    )
    console.print(f"wrote the secrets of {count} subscription(s) again, {how}")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    status: Annotated[
        str | None, typer.Option(help="Only this state: pending, delivered, retrying, failed.")
    ] = None,
    subscription: Annotated[str | None, typer.Option(help="Only this subscription id.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
) -> None:
    """Where each delivery stands (its latest attempt), newest first."""
    from sigflow.exceptions import ConfigError
    from sinks.webhooks.deliveries import STATUSES

    if status is not None and status not in STATUSES:
        raise ConfigError(f"--status must be one of {', '.join(STATUSES)}, got {status!r}")
    states = asyncio.run(
        _with_webhooks(
            cli_settings(),
            lambda _, log: log.states(
                status=status,  # type: ignore[arg-type]  # checked above
                subscription_id=subscription,
                limit=limit,
            ),
        )
    )
    for state in states:
        code = state.status_code if state.status_code is not None else "-"
        typer.echo(
            f"{state.last_attempt_at:%Y-%m-%dT%H:%M:%SZ}  {state.webhook_id}  "
            f"{state.subscription_id}  {state.status}  attempts={state.attempts}  "
            f"http={code}  {state.alert_id}  {state.error}".rstrip()
        )


@webhooks_app.command("redeliver")
def webhooks_redeliver(
    subscription: Annotated[str | None, typer.Option(help="Only this subscription id.")] = None,
    webhook_id: Annotated[str | None, typer.Option(help="Only this delivery.")] = None,
) -> None:
    """Queue failed deliveries again (same webhook-id, a new round of attempts)."""
    from sigflow.kafka import create_producer, ensure_topics
    from sinks.webhooks.redelivery import redeliver_failed

    settings = cli_settings()

    async def run(store: Any, log: Any) -> Any:
        await ensure_topics(settings)
        producer = create_producer(settings)
        await producer.start()
        try:
            return await redeliver_failed(
                settings, log, store, producer, subscription_id=subscription, webhook_id=webhook_id
            )
        finally:
            await producer.stop()

    report = asyncio.run(_with_webhooks(settings, run))
    for skipped, reason in report.skipped.items():
        console.print(f"skipped {skipped}: {reason}")
    console.print(f"queued {len(report.queued)} failed deliveries for redelivery")


async def _with_webhooks(settings: Settings, action: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run `action(subscription store, delivery log)` (migrating first)."""
    from sigflow.roles import migrate
    from sinks.warehouse import connect, database_name
    from sinks.webhooks.deliveries import DeliveryLog
    from sinks.webhooks.store import SubscriptionStore

    await migrate(settings)
    client = await connect(settings)
    database = database_name(settings)
    try:
        return await action(
            SubscriptionStore.from_settings(client, settings), DeliveryLog(client, database)
        )
    finally:
        await client.close()


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(file_okay=False, help="Where to write *.json.")],
) -> None:
    """Write one JSON Schema file per topic."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory, cli_settings().topic_prefix):
        console.print(str(path))


@schemas_app.command("asyncapi")
def schemas_asyncapi(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="Write here instead of stdout."),
    ] = None,
) -> None:
    """Print the AsyncAPI 3.0 document of every topic (channels, keys, payload schemas)."""
    import json

    import sigflow
    from schemas.asyncapi import asyncapi_document

    settings = cli_settings()
    document = asyncapi_document(
        settings.topic_prefix, settings.kafka_bootstrap, sigflow.__version__
    )
    text = json.dumps(document, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


def main() -> None:
    """Console entry point: expected errors become one line and an exit code."""
    try:
        app()
    except SigflowError as exc:
        # escape: the message may hold `[...]` (URLs, paths); soft_wrap: one line, any width
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
