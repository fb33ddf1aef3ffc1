"""OpenTelemetry tracing across the roles, the trace context riding in Kafka record headers.

Off by default (`SIGFLOW_TRACING=none`): `enabled()` is then False, every helper here
returns at once, and no record header is read or written, so the hot path pays one
boolean check per record or batch. This module is the only one that talks to the
OpenTelemetry API; the roles call the helpers below.

Spans (each role's `service.name` is `<SIGFLOW_TRACING_SERVICE_NAME>-<role>`):

- ingest: `publish <topic>` (PRODUCER), one per Kafka record sent (a trades record holds
  a whole batch of trades);
- processor: `process <stream>` (CONSUMER), one per micro-batch, with a link to the
  context of every consumed record; it continues the trace when all of them belong to
  one trace. Each output key gets an `emit <stream>` span, child of the newest consumed
  record with the same key (else of the batch span), whose context the key's output
  records carry;
- sink: `clickhouse insert <table>` (CLIENT) with links to the consumed records;
- webhooks: `webhook attempt` (CLIENT), child of the alert record's context, one per
  HTTP attempt (retries carry the alert's context on `webhooks.retry`).

Headers follow W3C Trace Context (`traceparent`, `tracestate`), written and read by the
global OpenTelemetry propagator.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as context_api
from opentelemetry import propagate
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Link, SpanKind, Tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from sigflow.settings import Settings

__all__ = [
    "TRACEPARENT",
    "BatchTrace",
    "Context",
    "SpanKind",
    "configure_tracing",
    "current_ids",
    "distinct_links",
    "enabled",
    "extract",
    "inject",
    "link",
    "links",
    "output_headers",
    "publish_span",
    "shutdown_tracing",
    "span",
]

TRACEPARENT = "traceparent"
MAX_LINKS = 1024  # per span; a batch links every record it consumed, up to this many
Headers = list[tuple[str, bytes]]
RecordHeaders = Sequence[tuple[str, bytes]] | None

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_NO_HEADERS: contextlib.nullcontext[None] = contextlib.nullcontext(None)
_batch: ContextVar[BatchTrace | None] = ContextVar("sigflow_batch_trace", default=None)


class _HeaderGetter(Getter[RecordHeaders]):
    """Reads W3C fields from Kafka headers: a sequence of (name, bytes) pairs."""

    def get(self, carrier: RecordHeaders, key: str) -> list[str] | None:
        values = [v.decode("latin-1") for k, v in carrier or () if k == key and v is not None]
        return values or None

    def keys(self, carrier: RecordHeaders) -> list[str]:
        return [k for k, _ in carrier or ()]


class _HeaderSetter(Setter[Headers]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier.append((key, value.encode("latin-1")))


_GETTER, _SETTER = _HeaderGetter(), _HeaderSetter()


def enabled() -> bool:
    """Whether spans are recorded (and headers read and written) in this process."""
    return _tracer is not None


def configure_tracing(settings: Settings, role: str, exporter: SpanExporter | None = None) -> None:
    """Record spans for `role` as the settings say (nothing for `none`).

    `exporter` replaces the configured one and exports each span as it ends (tests pass
    the SDK's in-memory exporter). Calling it again replaces the previous setup.
    """
    global _tracer, _provider
    if exporter is None and settings.tracing == "none":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    shutdown_tracing()
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"{settings.tracing_service_name}-{role}"}),
        sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio)),
        span_limits=SpanLimits(max_links=MAX_LINKS),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.tracing == "console":
        provider.add_span_processor(SimpleSpanProcessor(_console_exporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(settings.otlp_endpoint)))
    _provider = provider
    _tracer = provider.get_tracer("sigflow")


def _console_exporter() -> SpanExporter:
    """One span per line as JSON on stdout (for a look without a collector, and tests)."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter(
        out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n"
    )


def shutdown_tracing() -> None:
    """Export what is pending and stop recording (safe when tracing is off)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer, _provider = None, None


def extract(headers: RecordHeaders) -> Context:
    """The trace context a consumed record's headers carry (empty without headers)."""
    return propagate.extract(headers, getter=_GETTER)


def inject(context: Context | None = None) -> Headers:
    """Kafka headers carrying `context` (default: the current one)."""
    headers: Headers = []
    propagate.inject(headers, context=context, setter=_SETTER)
    return headers


def link(headers: RecordHeaders) -> Link | None:
    """A link to the span that produced a record, if its headers carry one."""
    context = trace_api.get_current_span(extract(headers)).get_span_context()
    return Link(context) if context.is_valid else None


def links(all_headers: Iterable[RecordHeaders]) -> list[Link]:
    """Links to the producers of consumed records: each distinct span once."""
    return distinct_links(found for headers in all_headers if (found := link(headers)) is not None)


def distinct_links(all_links: Iterable[Link]) -> list[Link]:
    """Each linked span once (records of one output key share their producer's span)."""
    unique: dict[tuple[int, int], Link] = {}
    for found in all_links:
        unique.setdefault((found.context.trace_id, found.context.span_id), found)
    return list(unique.values())


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the span running now, for log lines."""
    if _tracer is None:
        return None
    context = trace_api.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    links: Sequence[Link] = (),
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """A span around the block (current while it runs); yields None when tracing is off."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(
        name, context=parent, kind=kind, links=links, attributes=attributes
    ) as current:
        yield current


def publish_span(
    topic: str, key: bytes | None, **attributes: Any
) -> contextlib.AbstractContextManager[Headers | None]:
    """A PRODUCER span for one record to send; yields its headers (None when off)."""
    if _tracer is None:
        return _NO_HEADERS
    return _publishing(topic, key, attributes)


@contextlib.contextmanager
def _publishing(topic: str, key: bytes | None, attributes: Mapping[str, Any]) -> Iterator[Headers]:
    with span(
        f"publish {topic}",
        kind=SpanKind.PRODUCER,
        attributes={**_record_attributes(topic, key), **attributes},
    ):
        yield inject()


def _record_attributes(topic: str, key: bytes | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
    return attributes


def output_headers(key: bytes) -> Headers | None:
    """Headers of a record about to be sent from the micro-batch running now (see
    `BatchTrace`); None when tracing is off."""
    if _tracer is None:
        return None
    batch = _batch.get()
    return inject() if batch is None else batch.headers_for(key)


class BatchTrace:
    """The span of one processor micro-batch, and the headers each output key carries.

    Outputs of a key that was consumed in the batch continue the trace of the newest
    record with that key (so one trade can be followed to its candle); other outputs
    carry the batch span's context, whose links lead to every consumed record. While
    the block runs, `output_headers()` answers for this batch. With tracing off it does
    nothing and `headers_for()` returns None.
    """

    def __init__(self, name: str, consumed: Iterable[tuple[bytes | None, RecordHeaders]]) -> None:
        self.name = name
        self._consumed = consumed
        self._newest: dict[bytes | None, Context] = {}
        self._span: Any = None
        self._batch_context: Context | None = None
        self._headers: dict[bytes, Headers] = {}
        self._tokens: tuple[Any, Any] | None = None

    def __enter__(self) -> BatchTrace:
        if _tracer is None:
            return self
        count = 0
        newest: Context | None = None
        unique: dict[tuple[int, int], Link] = {}
        for key, headers in self._consumed:
            count += 1
            context = extract(headers)
            producer = trace_api.get_current_span(context).get_span_context()
            if producer.is_valid:
                self._newest[key] = newest = context  # in offset order per partition
                unique.setdefault((producer.trace_id, producer.span_id), Link(producer))
        one_trace = len({trace_id for trace_id, _ in unique}) == 1
        self._span = _tracer.start_span(
            self.name,
            # One trace consumed: continue it; several: a new one, linked to them all.
            context=newest if one_trace else Context(),
            kind=SpanKind.CONSUMER,
            links=list(unique.values()),
            attributes={"messaging.system": "kafka", "messaging.batch.message_count": count},
        )
        self._batch_context = trace_api.set_span_in_context(self._span)
        self._tokens = (context_api.attach(self._batch_context), _batch.set(self))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._span is None:
            return
        # An agent that crashed closes its batch iterator later, from another task:
        # only the context that entered may be restored.
        tokens, self._tokens = self._tokens, None
        if tokens is not None:
            try:
                _batch.reset(tokens[1])
            except ValueError:  # another context: it holds nothing of this batch to restore
                pass
            else:
                context_api.detach(tokens[0])
        if isinstance(exc_info[1], Exception):  # not a cancellation or generator close
            self._span.record_exception(exc_info[1])
            self._span.set_status(trace_api.StatusCode.ERROR)
        self._span.end()
        self._span = None

    def headers_for(self, key: bytes) -> Headers | None:
        """The headers of an output record with `key` (None when tracing is off)."""
        if self._batch_context is None or _tracer is None:
            return None
        headers = self._headers.get(key)
        if headers is None:
            parent = self._newest.get(key, self._batch_context)
            with span(
                f"emit {self.name.removeprefix('process ')}",
                kind=SpanKind.PRODUCER,
                parent=parent,
                links=[Link(trace_api.get_current_span(self._batch_context).get_span_context())],
                attributes={"messaging.kafka.message.key": key.decode("utf-8", "replace")},
            ):
                headers = self._headers[key] = inject()
        return headers
