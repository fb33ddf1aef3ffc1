"""Exchange feeds against local fake exchanges and the real Kafka broker.

Each fake speaks its exchange's wire format (tests/fakes/exchange_server.py) and keeps
a tape of every trade that happened; the tests break the connection in the ways real
exchanges do and compare the `trades` topic with the tape, id by id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from ingest import metrics
from ingest.exchanges import EXCHANGE_MAP
from ingest.exchanges.runner import build_feeds, run_feeds
from ingest.producer import EventProducer
from sigflow.settings import ExchangeUrls, Settings, settings_env
from tests.fakes.exchange_server import WIRES, FakeExchangeServer, TapeTrade

pytestmark = pytest.mark.integration
SYMBOLS = ["BTC-USDT", "ETH-USDT"]
FIXTURES = Path(__file__).parents[1] / "fixtures" / "exchanges"


def feed_settings(settings: Settings, server: FakeExchangeServer, **updates: Any) -> Settings:
    """Settings pointing the exchange at the fake, with fast back-off."""
    return settings.model_copy(
        update={
            "exchange_urls": {
                server.wire.exchange: ExchangeUrls(ws=server.ws_url, rest=server.rest_url)
            },
            "exchange_backoff_initial_seconds": 0.05,
            "exchange_backoff_max_seconds": 0.2,
            "exchange_silence_seconds": 10.0,
            **updates,
        }
    )


@asynccontextmanager
async def running_feed(settings: Settings, exchange: str) -> AsyncIterator[asyncio.Task[None]]:
    """The exchange's feed running in this loop; stopped (cancelled, flushed) on exit."""
    async with EventProducer(settings, component="test.exchanges") as producer:
        feeds = build_feeds(settings, producer, [exchange], SYMBOLS)
        task = asyncio.create_task(run_feeds(feeds))
        try:
            yield task
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await producer.flush()


async def consume(
    settings: Settings, topic: str, done: Callable[[list[Any]], bool], timeout: float = 30
) -> list[Any]:
    """Events of `topic` once `done(events)`, plus any that follow in 1 s.

    A `trades` record holds an array of trades: each trade is one event here.
    """
    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while not done(found):
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    found.extend(event for r in records for event in events_of(r.value))
        extra = await consumer.getmany(timeout_ms=1000)  # a duplicate would show up here
        found.extend(event for rs in extra.values() for r in rs for event in events_of(r.value))
    finally:
        await consumer.stop()
    return found


def events_of(value: bytes | None) -> list[Any]:
    decoded = orjson.loads(value or b"null")
    return decoded if isinstance(decoded, list) else [decoded]


def tape_ids(trades: list[TapeTrade]) -> dict[str, list[str]]:
    """Trade ids per normalized symbol, in tape order."""
    by_symbol: dict[str, list[str]] = {}
    for trade in trades:
        by_symbol.setdefault(trade.pair, []).append(trade.trade_id)
    return by_symbol


def topic_ids(records: list[Any]) -> dict[str, list[str]]:
    """Trade ids per symbol, in topic order (one partition per key keeps it)."""
    by_symbol: dict[str, list[str]] = {}
    for record in records:
        by_symbol.setdefault(record["symbol"], []).append(record["trade_id"])
    return by_symbol


def counter(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


@pytest.mark.parametrize("exchange", WIRES)
async def test_dropped_connection_and_missed_trades_end_up_on_the_topic_once_each(
    exchange: str, pipeline_settings: Settings
) -> None:
    async with FakeExchangeServer(WIRES[exchange]()) as server:
        settings = feed_settings(pipeline_settings, server)
        sequential = EXCHANGE_MAP[exchange].sequential_trade_ids
        gaps_before = counter(metrics.GAPS, exchange, "sequence" if sequential else "outage")
        backfilled_before = counter(metrics.BACKFILLED, exchange)
        reconnects_before = counter(metrics.RECONNECTS, exchange)
        missed = 0
        async with running_feed(settings, exchange) as feed:
            await server.wait_for("subscriptions", 1)
            first = server.make_trades(SYMBOLS, 10)
            await server.publish(first)
            if sequential:  # a message lost mid-stream: the next id reveals the hole
                server.happen(lost := server.make_trades(SYMBOLS, 4))
                missed += len(lost)
                server.throttle_next = 1  # and the REST API says 429 once
                await server.publish(server.make_trades(SYMBOLS, 4))
            await asyncio.sleep(0.3)
            await server.drop()
            server.happen(during_outage := server.make_trades(SYMBOLS, 6))
            missed += len(during_outage)
            await server.wait_for("subscriptions", 2)
            if not sequential:  # the outage is filled by time once the reconnect is seen
                await server.wait_for("rest_answers", len(SYMBOLS))
            await server.publish(first[-2:], replay=True)  # the exchange repeats itself
            await server.publish(server.make_trades(SYMBOLS, 10))
            expected = tape_ids(server.tape)
            total = len(server.tape)
            records = await consume(settings, "trades", lambda found: len(found) >= total)
            assert not feed.done(), feed
        assert topic_ids(records) == expected, "every trade once, in order per symbol"
        assert all(r["exchange"] == exchange and r["received_ts"] >= r["ts"] for r in records)
        assert counter(metrics.BACKFILLED, exchange) - backfilled_before == missed
        assert counter(metrics.GAPS, exchange, "sequence" if sequential else "outage") > (
            gaps_before
        )
        assert counter(metrics.RECONNECTS, exchange) - reconnects_before == 1
        if sequential:
            assert [status for status, _ in server.rest_calls][:2] == [429, 200]
        assert server.close_codes[-1] == 1000, "cancelling the feed closes the socket cleanly"


@pytest.mark.parametrize("exchange", WIRES)
async def test_malformed_messages_go_to_the_dlq_and_unknown_ones_are_counted_and_skipped(
    exchange: str, pipeline_settings: Settings
) -> None:
    directory = FIXTURES / exchange
    malformed = sorted(directory.glob("malformed_*"))
    unknown = sorted(directory.glob("unknown_*"))
    async with FakeExchangeServer(WIRES[exchange]()) as server:
        settings = feed_settings(pipeline_settings, server)
        unknown_before = counter(metrics.UNKNOWN_MESSAGES, exchange)
        async with running_feed(settings, exchange):
            await server.wait_for("subscriptions", 1)
            for path in [*malformed, *unknown]:
                await server.send_raw(path.read_text())
            await server.publish(trades := server.make_trades(SYMBOLS, 3))
            letters = await consume(settings, "dlq", lambda found: len(found) >= len(malformed))
            records = await consume(settings, "trades", lambda found: len(found) >= 3)
    assert sorted(letter["raw"] for letter in letters) == sorted(p.read_text() for p in malformed)
    for letter in letters:
        assert letter["source_topic"] == exchange
        assert letter["component"] == "test.exchanges"
        assert letter["reason"] and letter["error_kind"] in ("malformed", "unknown_symbol")
    assert counter(metrics.UNKNOWN_MESSAGES, exchange) - unknown_before == len(unknown)
    assert topic_ids(records) == tape_ids(trades), "the stream went on after bad input"


@pytest.mark.parametrize("exchange", WIRES)
async def test_watchdog_restarts_a_connection_that_went_silent(
    exchange: str, pipeline_settings: Settings
) -> None:
    async with FakeExchangeServer(WIRES[exchange]()) as server:
        settings = feed_settings(pipeline_settings, server, exchange_silence_seconds=1.0)
        reconnects_before = counter(metrics.RECONNECTS, exchange)
        async with running_feed(settings, exchange):
            await server.wait_for("subscriptions", 1)
            server.silent = True  # no data, no pongs, the socket stays open
            await server.wait_for("connections", 2, timeout=10)
            server.silent = False
            await server.wait_for("subscriptions", 3, timeout=10)  # re-subscribed
            await server.publish(trades := server.make_trades(SYMBOLS, 4))
            records = await consume(settings, "trades", lambda found: len(found) >= 4)
    assert counter(metrics.RECONNECTS, exchange) - reconnects_before >= 1
    assert topic_ids(records) == tape_ids(trades)


async def test_cli_role_follows_a_feed_and_stops_cleanly_on_sigterm(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    async with FakeExchangeServer(WIRES["binance"]()) as server:
        settings = feed_settings(pipeline_settings, server)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SIGFLOW_")},
            **settings_env(settings),
        }
        command = ["ingest", "exchanges", "--exchange", "binance", "--symbols", ",".join(SYMBOLS)]
        log_path = tmp_path / "role.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "sigflow", *command],
                env=env,
                cwd=tmp_path,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            await server.wait_for("subscriptions", 1, timeout=60)
            await server.publish(trades := server.make_trades(SYMBOLS, 20))
            await asyncio.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(process.wait, 30)
        finally:
            if process.poll() is None:
                process.kill()
        output = log_path.read_text()
        assert code == 0, output
        assert server.close_codes == [1000], output
        records = await consume(settings, "trades", lambda found: len(found) >= 20)
    assert topic_ids(records) == tape_ids(trades)


def test_cli_refuses_an_unknown_exchange_or_symbol_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGFLOW_")}
    for args, message in (
        (["--exchange", "mtgox"], "unknown exchange 'mtgox'"),
        (["--symbols", "BTCUSDT"], "expected BASE-QUOTE"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "sigflow", "ingest", "exchanges", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
