"""Building dead-letter envelopes: every role rejects bad input the same way."""

from __future__ import annotations

import base64
import time
from typing import Protocol

from schemas.codec import RejectedElement
from schemas.events import DeadLetter


def _raw_text(raw: bytes | None) -> tuple[str, str]:
    """The `raw`/`raw_encoding` pair: text when the bytes are UTF-8, else base64."""
    if raw is None:
        return "", "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def dead_letter_record(
    *,
    source_topic: str,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    kind: str,
    component: str,
    partition: int | None = None,
    offset: int | None = None,
) -> tuple[bytes, bytes]:
    """The Kafka key and value of a `dlq` record for one rejected input."""
    raw, encoding = _raw_text(value)
    letter = DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key=key.decode("utf-8", "backslashreplace") if key is not None else None,
        raw=raw,
        raw_encoding=encoding,
        reason=reason,
        error_kind=kind,
        component=component,
        rejected_at=int(time.time() * 1000),
    )
    return source_topic.encode(), letter.model_dump_json().encode()


class ConsumedRecord(Protocol):
    """What every consumed record offers (aiokafka's and Faust's alike)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def reject_record(
    record: ConsumedRecord, reason: str, kind: str, component: str
) -> tuple[bytes, bytes]:
    """The `dlq` key and value for a consumed record that `component` rejected."""
    return reject_element(record, RejectedElement(record.value or b"", reason), kind, component)


def reject_element(
    record: ConsumedRecord, element: RejectedElement, kind: str, component: str
) -> tuple[bytes, bytes]:
    """The `dlq` record for one event of a batch record: its own bytes, its record's place."""
    return dead_letter_record(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=element.raw,
        reason=element.reason,
        kind=kind,
        component=component,
    )
