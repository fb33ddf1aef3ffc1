"""One trade followed by its trace across every hop, on the real Kafka broker.

Ingest (EventProducer), the ClickHouse sink and the webhook dispatcher run in this
process and record into the SDK's in-memory exporter; the processor is a real Faust
worker process (`sigflow process`) with the console exporter, whose spans are read back
from its output. The trade travels in one `trades` record (a +3% jump on one feed, so
a price-jump anomaly raises an alert); the test checks that the record's trace id comes
out on the other side of each hop: the processor's batch span, the candle and alert
records' `traceparent` headers, the sink's insert spans and the webhook attempt span.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.anomalies import Scenario, market_trades
from sigflow import tracing
from sigflow.settings import Settings
from sinks.runner import SinkRunner
from tests.conftest import Roles
from tests.e2e.pipeline import eventually, publish
from tests.integration.webhook_receiver import (
    dispatching,
    prepare,
    receiving,
    subscribe,
    webhook_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

JUMP = Scenario(
    exchanges=("binance",),
    symbols={"BTC-USDT": 60_000.0},
    minutes=34,
    trades_per_second=1.0,
    seed=7,
    jumps=(("BTC-USDT", 30, 0.03),),
)


@pytest.fixture
def spans(pipeline_settings: Settings) -> Iterator[InMemorySpanExporter]:
    """Spans of this process (ingest, sink, dispatcher), kept in memory."""
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(pipeline_settings, "test", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


@contextlib.asynccontextmanager
async def sinking(settings: Settings) -> AsyncIterator[SinkRunner]:
    """The ClickHouse sink running in this event loop until the block ends."""
    runner = SinkRunner(settings)
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)


def traceparent(headers: Any) -> tuple[str, str]:
    """(trace id, parent span id) in hex from a record's W3C `traceparent` header."""
    [value] = [v for k, v in headers if k == tracing.TRACEPARENT]
    _version, trace_id, span_id, _flags = value.decode().split("-")
    return trace_id, span_id


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def linked(span: ReadableSpan) -> set[tuple[str, str]]:
    return {(f"{x.context.trace_id:032x}", f"{x.context.span_id:016x}") for x in span.links}


async def headers_of(settings: Settings, name: str) -> list[Any]:
    """The headers of every record of a topic up to its end now."""
    topic = settings.topic(name)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found: list[Any] = []
        async with asyncio.timeout(20):
            while any([await consumer.position(tp) < end[tp] for tp in partitions]):
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    found += [record.headers for record in batch]
    finally:
        await consumer.stop()
    return found


def console_spans(log: Path) -> list[dict[str, Any]]:
    """Spans the console exporter wrote, one JSON object per line, among the log lines."""
    lines = log.read_text().splitlines()
    return [orjson.loads(line) for line in lines if line.startswith('{"name"')]


async def test_one_trade_is_followed_by_its_trace_from_ingest_to_clickhouse_and_webhook(
    pipeline_settings: Settings, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    # A record holds up to `ingest_batch_trades` trades: all of them fit in one record.
    settings = webhook_settings(pipeline_settings, ingest_batch_trades=10_000)
    trades = market_trades(JUMP)
    await prepare(settings)
    processor = Roles(settings.model_copy(update={"tracing": "console"}), tmp_path / "roles")
    async with receiving() as receiver:
        await subscribe(settings, receiver)
        processor.start("process")
        try:
            await publish(settings, trades)
            [ingest] = [s for s in spans.get_finished_spans() if s.name.startswith("publish ")]
            trace_id, ingest_span = hex_ids(ingest)
            assert ingest.name == f"publish {settings.topic('trades')}"
            assert ingest.attributes is not None
            assert ingest.attributes["messaging.batch.message_count"] == len(trades)

            async with sinking(settings), dispatching(settings):

                def insert_into(table: str) -> list[ReadableSpan]:
                    name = f"clickhouse insert {table}"
                    return [s for s in spans.get_finished_spans() if s.name == name]

                async def all_hops_done() -> bool:
                    return bool(
                        receiver.processed
                        and insert_into("candles")
                        and insert_into("alerts")
                        and [s for s in spans.get_finished_spans() if s.name == "webhook attempt"]
                    )

                await eventually(all_hops_done, "the webhook and the inserts", processor)
        finally:
            processor.stop_all()
    finished = spans.get_finished_spans()

    # Processor: the batch that consumed the record continues its trace and links to it;
    # each output key has an emit span, child of the newest record with that key.
    remote = console_spans(processor.run_dir / "process.log")
    [batch] = [s for s in remote if s["name"] == "process trades"]
    assert batch["context"]["trace_id"] == f"0x{trace_id}"
    assert batch["parent_id"] == f"0x{ingest_span}"
    assert [link["context"]["span_id"] for link in batch["links"]] == [f"0x{ingest_span}"]
    assert batch["resource"]["attributes"]["service.name"] == "sigflow-process"
    emits = {
        s["attributes"]["messaging.kafka.message.key"]: s
        for s in remote
        if s["name"] == "emit trades"
    }
    assert emits["binance:BTC-USDT"]["parent_id"] == f"0x{ingest_span}"
    # Closed candles keyed by symbol (no consumed record has that key): the batch's child.
    assert emits["BTC-USDT"]["parent_id"] == batch["context"]["span_id"]

    # Candle records carry the emit span of their key in their headers.
    candle_headers = await headers_of(settings, "candles")
    assert candle_headers, "no candle records"
    emit_candles = emits["binance:BTC-USDT"]["context"]
    for headers in candle_headers:
        assert traceparent(headers) == (trace_id, emit_candles["span_id"].removeprefix("0x"))

    # Sink: the trades insert links to the ingest span, the candles insert to the trace.
    [trades_insert] = [s for s in finished if s.name == "clickhouse insert trades"]
    assert (trace_id, ingest_span) in linked(trades_insert)
    candle_links = set().union(*(linked(s) for s in finished if s.name.endswith(" candles")))
    assert candle_links and {trace for trace, _ in candle_links} == {trace_id}

    # Webhook: the alert record carries the trace; the attempt is a child of its context.
    alert_parents = {traceparent(h) for h in await headers_of(settings, "alerts")}
    assert alert_parents and {trace for trace, _ in alert_parents} == {trace_id}
    attempts = [s for s in finished if s.name == "webhook attempt"]
    assert attempts
    for attempt in attempts:
        assert attempt.parent is not None
        assert (f"{attempt.parent.trace_id:032x}", f"{attempt.parent.span_id:016x}") in (
            alert_parents
        )
        assert attempt.attributes is not None
        assert attempt.attributes["http.response.status_code"] == 200
