"""Trace context in Kafka headers, and the spans of a processor micro-batch (in memory)."""

from __future__ import annotations

import contextvars
import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sigflow import tracing
from sigflow.logs import JsonFormatter, bind_log_fields
from sigflow.settings import Settings


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(Settings(), "test", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def published(topic: str, key: bytes) -> list[tuple[str, bytes]]:
    with tracing.publish_span(topic, key) as headers:
        assert headers is not None
        return headers


def span_of(headers: list[tuple[str, bytes]] | None) -> int:
    found = tracing.link(headers)
    assert found is not None, headers
    return found.context.span_id


def trace_of(headers: list[tuple[str, bytes]] | None) -> int:
    found = tracing.link(headers)
    assert found is not None, headers
    return found.context.trace_id


def test_tracing_off_writes_no_header_and_records_nothing() -> None:
    assert not tracing.enabled()
    with tracing.publish_span("t.trades", b"k") as headers:
        assert headers is None
    assert tracing.output_headers(b"k") is None
    with tracing.BatchTrace("process trades", iter(())) as batch:
        assert batch.headers_for(b"k") is None
    assert tracing.current_ids() is None


def test_a_published_record_carries_its_span_as_w3c_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    headers = published("t.trades", b"binance:BTC-USDT")
    [span] = spans.get_finished_spans()
    assert span.name == "publish t.trades" and span.kind == tracing.SpanKind.PRODUCER
    assert span.resource.attributes["service.name"] == "sigflow-test"
    [(name, value)] = headers
    context = span.get_span_context()
    assert name == tracing.TRACEPARENT
    version, trace_id, span_id, flags = value.decode().split("-")
    assert (version, trace_id, span_id) == (
        "00",
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    assert int(flags, 16) & 1, "sampled"
    assert span_of(headers) == context.span_id
    assert tracing.link([("other", b"x")]) is None and tracing.link(None) is None


def test_a_batch_of_one_trace_continues_it_and_each_key_follows_its_newest_record(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("ingest"):
        first = published("t.trades", b"a")
        second = published("t.trades", b"b")
        newest_a = published("t.trades", b"a")
    consumed = [(b"a", first), (b"b", second), (b"a", newest_a)]
    with tracing.BatchTrace("process trades", consumed):
        out_a = tracing.output_headers(b"a")
        assert tracing.output_headers(b"a") is out_a  # one emit span per key and batch
        out_other = tracing.output_headers(b"BTC-USDT")
    finished = {s.name: s for s in spans.get_finished_spans() if s.name != "publish t.trades"}
    batch = finished["process trades"]
    assert batch.kind == tracing.SpanKind.CONSUMER
    assert batch.context.trace_id == trace_of(first)
    assert (
        batch.parent is not None and batch.parent.span_id == tracing.link(newest_a).context.span_id
    )
    records = [span_of(h) for h in (first, second, newest_a)]
    assert {link.context.span_id for link in batch.links} == set(records)
    emits = [s for s in spans.get_finished_spans() if s.name == "emit trades"]
    by_key = {s.attributes["messaging.kafka.message.key"]: s for s in emits}
    assert by_key["a"].parent.span_id == span_of(newest_a)
    assert by_key["BTC-USDT"].parent.span_id == batch.context.span_id
    assert span_of(out_a) == by_key["a"].context.span_id
    assert trace_of(out_other) == trace_of(out_a) == trace_of(first)


def test_a_batch_of_several_traces_starts_a_new_one_linked_to_every_record(
    spans: InMemorySpanExporter,
) -> None:
    one, two = published("t.trades", b"a"), published("t.trades", b"b")
    untraced: list[tuple[str, bytes]] = []
    with tracing.BatchTrace("process trades", [(b"a", one), (b"b", two), (b"c", untraced)]):
        out_b, out_c = tracing.output_headers(b"b"), tracing.output_headers(b"c")
    [batch] = [s for s in spans.get_finished_spans() if s.name == "process trades"]
    assert batch.parent is None
    assert {link.context.trace_id for link in batch.links} == {trace_of(one), trace_of(two)}
    assert batch.context.trace_id not in {trace_of(one), trace_of(two)}
    assert trace_of(out_b) == trace_of(two)  # key b continues its record's trace
    assert trace_of(out_c) == batch.context.trace_id  # no traced record of key c


def test_json_log_lines_carry_the_role_and_the_running_trace(
    spans: InMemorySpanExporter,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sigflow.test_tracing")
    logger.addHandler(handler)
    logger.propagate = False
    bind_log_fields(role="sink")
    try:
        logger.warning("outside")
        with tracing.span("inside") as current:
            logger.warning("inside", extra={"topic": "t.candles", "partition": 2})
    finally:
        logger.removeHandler(handler)
    outside, inside = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert outside["role"] == inside["role"] == "sink" and "trace_id" not in outside
    context = current.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert (inside["topic"], inside["partition"]) == ("t.candles", 2)


def test_a_batch_closed_from_another_context_still_ends_its_span(
    spans: InMemorySpanExporter,
) -> None:
    """A crashed agent's batch iterator is closed later by another task (whose context
    is a copy): no error there, and the span ends."""
    batch = tracing.BatchTrace("process trades", [(b"a", published("t.trades", b"a"))])
    entering = contextvars.copy_context()
    entering.run(batch.__enter__)
    entering.copy().run(batch.__exit__, GeneratorExit, GeneratorExit(), None)
    [ended] = [s for s in spans.get_finished_spans() if s.name == "process trades"]
    assert ended.status.is_ok and ended.end_time is not None
