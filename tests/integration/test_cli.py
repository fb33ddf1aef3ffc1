"""The `sigflow` command line run as a real process, configured only by `SIGFLOW_*` vars."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from schemas.dead_letters import dead_letter_record
from schemas.topics import TOPICS
from sigflow.cli import app
from sigflow.settings import Settings, settings_env
from sigflow.stack.process import free_port
from sinks.migrations import available_migrations
from sinks.warehouse import connect

COMMANDS = {
    "stack",
    "demo",
    "ingest",
    "process",
    "sink",
    "api",
    "migrate",
    "schemas",
    "webhooks",
    "dispatch",
}


def run_sigflow(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m sigflow ARGS` with only the given `SIGFLOW_*` variables set."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIGFLOW_") and k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "sigflow", *args],
        env={**base, **env},
        cwd=cwd,  # away from any .env file of the checkout
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(text: str) -> str:
    """Output with rich's wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def local_env(tmp_path: Path) -> dict[str, str]:
    return {"SIGFLOW_DATA_DIR": str(tmp_path / "data")}


# ---- help ---------------------------------------------------------------------------


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group below `group`, as the arguments that name it."""
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if hasattr(command, "commands"):
            paths += command_paths(command, (*prefix, name))
    return paths


ROOT: Any = typer.main.get_command(app)  # typer's own click group


def test_help_lists_every_command(tmp_path: Path, local_env: dict[str, str]) -> None:
    result = run_sigflow("--help", env=local_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^│ (\w+) ", result.stdout, re.MULTILINE))
    assert COMMANDS.issubset(listed), f"missing: {COMMANDS - listed}"


@pytest.mark.parametrize("path", command_paths(ROOT), ids=" ".join)
def test_every_command_has_its_own_help(
    path: tuple[str, ...], tmp_path: Path, local_env: dict[str, str]
) -> None:
    command = ROOT
    for name in path:
        command = command.commands[name]
    result = run_sigflow(*path, "--help", env=local_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Usage: python -m sigflow {' '.join(path)} [OPTIONS]" in result.stdout
    assert one_line(command.help.splitlines()[0]) in one_line(result.stdout)


# ---- migrate ------------------------------------------------------------------------


@pytest.mark.integration
async def test_migrate_applies_every_migration_once(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    env = settings_env(pipeline_settings)  # a fresh SIGFLOW_CLICKHOUSE_DATABASE
    first = await asyncio.to_thread(run_sigflow, "migrate", env=env, cwd=tmp_path)
    second = await asyncio.to_thread(run_sigflow, "migrate", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    shipped = [f"{m.version:04d}_{m.name}" for m in available_migrations()]
    assert shipped[:4] == ["0001_trades_and_candles", "0002_indicators", "0003_signals",
                           "0004_api_keys"]  # fmt: skip
    assert first.stderr.strip() == f"applied {len(shipped)} migration(s): {', '.join(shipped)}"
    assert second.returncode == 0, second.stderr
    assert second.stderr.strip() == "applied 0 migration(s): none pending"
    client = await connect(pipeline_settings)
    try:
        tables = await client.query("SHOW TABLES")
    finally:
        await client.close()
    assert {row[0] for row in tables.result_rows} >= {
        "alerts",
        "anomalies",
        "api_keys",
        "candles",
        "candles_1h",
        "daily_volume",
        "indicators",
        "onchain_blocks",
        "onchain_blocks_canonical",
        "onchain_transfers",
        "onchain_transfers_canonical",
        "schema_migrations",
        "signals",
        "trades",
        "webhook_deliveries",
        "webhook_delivery_status",
        "webhook_subscriptions",
    }


@pytest.mark.parametrize(
    ("url", "exit_code", "message"),
    [
        ("http://127.0.0.1:{port}", 3, "cannot reach ClickHouse at http://127.0.0.1:{port}"),
        ("ftp://127.0.0.1/[/red]", 2, "must be http(s)://host:port, got 'ftp://127.0.0.1/[/red]'"),
    ],
    ids=["closed-port", "not-http-with-markup"],
)
def test_migrate_without_a_warehouse_fails_with_one_error_line(
    url: str, exit_code: int, message: str, tmp_path: Path, local_env: dict[str, str]
) -> None:
    port = free_port()
    env = {
        **local_env,
        "SIGFLOW_CLICKHOUSE_URL": url.format(port=port),
        "SIGFLOW_STARTUP_TIMEOUT_SECONDS": "1",
    }
    result = run_sigflow("migrate", env=env, cwd=tmp_path)
    assert result.returncode == exit_code
    # The start-up wait may log what it waits for; the error itself is one line, last.
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.stderr.splitlines()[-1] == line
    assert message.format(port=port) in line
    assert "Traceback" not in result.stderr


# ---- schemas export -----------------------------------------------------------------

HASH = "0x" + "ab" * 32
EXAMPLES: dict[str, dict[str, Any]] = {
    "trades": {
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "trade_id": "3919131401",
        "price": 60_000.5,
        "size": 0.25,
        "side": "buy",
        "ts": 1_718_000_040_000,
        "received_ts": 1_718_000_040_012,
    },
    "candles": {
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "interval": "1m",
        "open_time": 1_718_000_040_000,
        "close_time": 1_718_000_100_000,
        "open": 60_000.5,
        "high": 60_010.0,
        "low": 59_990.0,
        "close": 60_001.0,
        "volume": 1.5,
        "quote_volume": 90_000.75,
        "vwap": 60_000.5,
        "trade_count": 3,
        "buy_volume": 1.0,
        "sell_volume": 0.5,
        "final": True,
    },
    "indicators": {
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "interval": "1m",
        "open_time": 1_718_000_040_000,
        "values": {"sma_20": 60_001.2, "rsi_14": 55.5, "vwap": 60_000.5},
    },
    "signals": {
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "interval": "1m",
        "open_time": 1_718_000_040_000,
        "rule": "ema_cross_12_26",
        "direction": 1,
        "strength": 0.42,
        "price": 60_001.0,
        "explanation": "EMA 12 crossed above EMA 26",
    },
    "anomalies": {
        "anomaly_id": "price_jump:binance:BTC-USDT:1m:1718000040000",
        "kind": "price_jump",
        "subject": "binance:BTC-USDT",
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "interval": "1m",
        "ts": 1_718_000_040_000,
        "score": 9.3,
        "severity": "critical",
        "observed": 0.031,
        "expected": 0.0004,
        "explanation": "1m return +3.1% is 9.3 robust z-scores from the median",
    },
    "alerts": {
        "alert_id": "big-moves:price_jump:binance:BTC-USDT:1m:1718000040000",
        "rule": "big-moves",
        "source": "anomaly",
        "kind": "price_jump",
        "severity": "critical",
        "subject": "binance:BTC-USDT",
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "ts": 1_718_000_040_000,
        "title": "BTC-USDT on binance jumped +3.1% in 1m",
        "explanation": "1m return +3.1% is 9.3 robust z-scores from the median",
        "score": 9.3,
    },
    "webhooks.retry": {
        "webhook_id": "msg_d86ed615bbd865d4171e7398462c8e99",
        "subscription_id": "sub_0a7f950119c2770d",
        "alert": {
            "alert_id": "big-moves:price_jump:binance:BTC-USDT:1718000040000",
            "rule": "big-moves",
            "source": "anomaly",
            "kind": "price_jump",
            "severity": "critical",
            "subject": "binance:BTC-USDT",
            "ts": 1_718_000_040_000,
            "title": "BTC-USDT on binance jumped +3.1% in 1m",
            "explanation": "1m return +3.1% is 9.3 robust z-scores from the median",
        },
        "attempt": 2,
        "last_attempt": 10,
        "due_at": 1_718_000_050_000,
        "last_status_code": 503,
        "last_error": "HTTP 503",
    },
    "onchain.blocks": {
        "chain_id": 1,
        "number": 20_000_000,
        "hash": HASH,
        "parent_hash": "0x" + "cd" * 32,
        "timestamp": 1_718_000_039_000,
        "base_fee": 4_200_000_000,
        "gas_used": 12_000_000,
        "tx_count": 150,
        "status": "confirmed",
        "confirmations": 12,
    },
    "onchain.transfers": {
        "chain_id": 1,
        "block": 20_000_000,
        "block_hash": HASH,
        "timestamp": 1_718_000_039_000,
        "tx_hash": "0x" + "ef" * 32,
        "log_index": 7,
        "token": "0x" + "12" * 20,
        "token_symbol": "USDC",
        "from_address": "0x" + "34" * 20,
        "to_address": "0x" + "56" * 20,
        "amount": "1500.000000000000000001",
        "usd_value": 1500.0,
        "confirmations": 12,
        "removed": False,
    },
    "dlq": json.loads(
        dead_letter_record(
            source_topic="trades.csv:3",
            key=None,
            value=b"binance,BTCUSDT,2,60001,0.5,sell,1718000041000",
            reason="symbol 'BTCUSDT' has no separator",
            kind="schema",
            component="ingest.replay",
        )[1]
    ),
}
EXAMPLES["webhooks.dlq"] = {**EXAMPLES["webhooks.retry"], "attempt": 10}
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
    "object": dict,
    "array": list,
}


def violations(
    schema: dict[str, Any], value: Any, at: str = "$", root: dict[str, Any] | None = None
) -> list[str]:
    """The keywords sigflow's schemas use, checked by hand (`jsonschema` is not installed)."""
    root = root or schema
    if "$ref" in schema:
        return violations(root["$defs"][schema["$ref"].removeprefix("#/$defs/")], value, at, root)
    if "anyOf" in schema:
        if any(not violations(branch, value, at, root) for branch in schema["anyOf"]):
            return []
        return [f"{at}: {value!r} matches no anyOf branch"]
    kind = schema.get("type")
    bool_as_number = isinstance(value, bool) and kind in ("integer", "number")
    if kind and (bool_as_number or not isinstance(value, JSON_TYPES[kind])):
        return [f"{at}: {value!r} is not {kind}"]
    checks = {
        "enum": lambda allowed: value in allowed,
        "pattern": lambda pattern: re.search(pattern, value),
        "minLength": lambda least: len(value) >= least,
        "minimum": lambda least: value >= least,
        "exclusiveMinimum": lambda bound: value > bound,
    }
    found = [f"{at}: fails {k}" for k, ok in checks.items() if k in schema and not ok(schema[k])]
    if kind == "object":
        properties = schema.get("properties", {})
        found += [f"{at}: lacks {name}" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if name in properties:
                found += violations(properties[name], item, f"{at}.{name}", root)
            elif schema.get("additionalProperties") is False:
                found.append(f"{at}: unexpected {name}")
    if kind == "array":
        if len(value) < schema.get("minItems", 0):
            found.append(f"{at}: fails minItems")
        for i, item in enumerate(value):
            found += violations(schema["items"], item, f"{at}[{i}]", root)
    return found


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """`sigflow schemas export DIR` with the topic prefix `acme.`; the schemas by file stem."""
    tmp_path = tmp_path_factory.mktemp("schemas")
    env = {"SIGFLOW_DATA_DIR": str(tmp_path / "data"), "SIGFLOW_TOPIC_PREFIX": "acme."}
    result = run_sigflow("schemas", "export", str(tmp_path / "out"), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return {
        p.name.removesuffix(".json"): json.loads(p.read_text())
        for p in (tmp_path / "out").iterdir()
    }


def test_schemas_export_writes_one_schema_per_topic(exported: dict[str, Any]) -> None:
    assert set(exported) == set(TOPICS) == set(EXAMPLES)
    for name, schema in exported.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["x-topic"] == f"acme.{name}"


@pytest.mark.parametrize("topic", sorted(EXAMPLES))
def test_exported_schema_accepts_a_real_record_of_its_topic(
    exported: dict[str, Any], topic: str
) -> None:
    assert violations(exported[topic], record_of(topic, EXAMPLES[topic])) == []


@pytest.mark.parametrize("topic", sorted(EXAMPLES))
def test_exported_schema_rejects_a_record_missing_a_required_field(
    exported: dict[str, Any], topic: str
) -> None:
    schema = exported[topic]
    event_schema = (
        schema["$defs"][schema["items"]["$ref"].split("/")[-1]] if TOPICS[topic].batched else schema
    )
    where = "$[0]" if TOPICS[topic].batched else "$"
    assert event_schema["required"]
    for name in event_schema["required"]:
        broken = {k: v for k, v in EXAMPLES[topic].items() if k != name}
        assert violations(schema, record_of(topic, broken)) == [f"{where}: lacks {name}"]


def test_a_batched_topic_schema_refuses_an_empty_batch(exported: dict[str, Any]) -> None:
    assert violations(exported["trades"], []) == ["$: fails minItems"]


def record_of(topic: str, event: dict[str, Any]) -> Any:
    """A record value as sigflow writes it: batched topics hold an array of events."""
    return [event] if TOPICS[topic].batched else event


# ---- ingest replay ------------------------------------------------------------------

T1 = 1_718_000_040_000  # 2024-06-10T06:14:00Z
TRADES_CSV = """\
exchange,symbol,trade_id,price,size,side,ts
Binance,btc/usdt,1,60000.5,0.25,buy,1718000040000
binance,BTCUSDT,2,60001,0.5,sell,1718000041000
coinbase,ETH-USD,3,3500.25,2,s,2024-06-10T06:14:03Z
binance,BTC_USDT,4,60002,0.1,b,1718000042000
"""


async def read_topic(settings: Settings, name: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a registry topic up to its end offsets now, partition by partition."""
    count = TOPICS[name].partitions or settings.topic_partitions  # as `ensure_topics` makes it
    partitions = [TopicPartition(settings.topic(name), p) for p in range(count)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while any([await consumer.position(tp) < end[tp] for tp in partitions]):
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += batch
    finally:
        await consumer.stop()
    return sorted(records, key=lambda r: (r.partition, r.offset))


@pytest.mark.integration
async def test_ingest_replay_publishes_good_rows_and_dead_letters_the_bad_one(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    settings = pipeline_settings  # a unique SIGFLOW_TOPIC_PREFIX on the test broker
    path = tmp_path / "trades.csv"
    path.write_text(TRADES_CSV)
    env = settings_env(settings)

    result = await asyncio.to_thread(
        run_sigflow, "ingest", "replay", str(path), env=env, cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert "3 trades published, 1 rejected to the DLQ" in one_line(result.stderr)
    trades = await read_topic(settings, "trades")
    published = [(r.key.decode(), trade) for r in trades for trade in json.loads(r.value)]
    received = [value.pop("received_ts") for _, value in published]
    assert all(isinstance(ts, int) for ts in received)
    btc = {"exchange": "binance", "symbol": "BTC-USDT", "side": "buy"}
    assert sorted(published, key=lambda item: item[1]["trade_id"]) == [
        ("binance:BTC-USDT", {**btc, "trade_id": "1", "price": 60000.5, "size": 0.25, "ts": T1}),
        (
            "coinbase:ETH-USD",
            {
                "exchange": "coinbase",
                "symbol": "ETH-USD",
                "trade_id": "3",
                "price": 3500.25,
                "size": 2.0,
                "side": "sell",
                "ts": T1 + 3_000,
            },
        ),
        (
            "binance:BTC-USDT",
            {**btc, "trade_id": "4", "price": 60002.0, "size": 0.1, "ts": T1 + 2_000},
        ),
    ]
    in_key_order = [value["trade_id"] for key, value in published if key == "binance:BTC-USDT"]
    assert in_key_order == ["1", "4"]  # one key, one partition, file order
    [letter] = await read_topic(settings, "dlq")
    body = json.loads(letter.value)
    assert letter.key == f"{path}:3".encode()
    assert body["source_topic"] == f"{path}:3"
    assert body["raw"] == "binance,BTCUSDT,2,60001,0.5,sell,1718000041000"
    assert "symbol 'BTCUSDT' has no separator" in body["reason"]
    assert (body["error_kind"], body["component"]) == ("schema", "ingest.replay")


@pytest.mark.integration
async def test_api_key_create_list_revoke_round_trip(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    env = settings_env(pipeline_settings)
    created = await asyncio.to_thread(
        run_sigflow, "api-key", "create", "dashboard", env=env, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("sfk_") and len(token.split("_")) == 3
    key_id = token.split("_")[1]
    listed = await asyncio.to_thread(run_sigflow, "api-key", "list", env=env, cwd=tmp_path)
    assert listed.stdout.strip() == f"{key_id}  dashboard"
    assert token.split("_")[2] not in listed.stdout
    revoked = await asyncio.to_thread(
        run_sigflow, "api-key", "revoke", key_id, env=env, cwd=tmp_path
    )
    assert revoked.returncode == 0, revoked.stderr
    listed = await asyncio.to_thread(run_sigflow, "api-key", "list", env=env, cwd=tmp_path)
    assert listed.stdout.strip() == f"{key_id}  dashboard  (revoked)"
    unknown = await asyncio.to_thread(
        run_sigflow, "api-key", "revoke", "nope", env=env, cwd=tmp_path
    )
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no API key with id")
