"""The batching sink contract (after quix-streams' `BatchingSink`).

A sink collects rows per (topic, partition); `flush()` hands each topic's batches to
the abstract `write()` (one warehouse insert per topic, not per partition) and clears
them in `finally`. The caller commits offsets only after `flush()` returned, so a
failed write is re-read from Kafka instead of being lost.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Batch:
    """Decoded rows of one topic partition and the offsets they span."""

    topic: str
    partition: int
    rows: list[Any] = field(default_factory=list)
    first_offset: int = -1
    last_offset: int = -1
    links: list[Any] = field(default_factory=list)  # trace links to the records' producers

    def extend(
        self, first_offset: int, last_offset: int, rows: list[Any], links: Sequence[Any] = ()
    ) -> None:
        """Record offsets `first..last` as consumed, keeping the rows that were valid."""
        if self.first_offset < 0:
            self.first_offset = first_offset
        self.last_offset = last_offset
        self.rows.extend(rows)
        self.links.extend(links)


def dedup_token(batches: list[Batch]) -> str:
    """Same input offsets, same token: a retried insert is dropped by the warehouse."""
    ranges = ",".join(
        f"{b.partition}:{b.first_offset}-{b.last_offset}"
        for b in sorted(batches, key=lambda b: b.partition)
    )
    return f"{batches[0].topic}:{ranges}"


class BatchingSink(ABC):
    """Per-partition batches, flushed on size or age."""

    def __init__(self, max_rows: int, max_age_seconds: float) -> None:
        self.max_rows = max_rows
        self.max_age_seconds = max_age_seconds
        self._batches: dict[tuple[str, int], Batch] = {}
        self._rows = 0
        self._oldest: float | None = None

    def add(
        self,
        topic: str,
        partition: int,
        first_offset: int,
        last_offset: int,
        rows: list[Any],
        links: Sequence[Any] = (),
    ) -> None:
        """Buffer consumed records `first..last` of a partition and their valid rows
        (`links`: trace links to the records' producers, when tracing is on)."""
        batch = self._batches.get((topic, partition))
        if batch is None:
            batch = self._batches[(topic, partition)] = Batch(topic, partition)
        batch.extend(first_offset, last_offset, rows, links)
        self._rows += len(rows)
        if self._oldest is None:
            self._oldest = time.monotonic()

    @property
    def pending(self) -> bool:
        """Anything consumed and not yet flushed."""
        return bool(self._batches)

    def first_offsets(self) -> dict[tuple[str, int], int]:
        """Where to seek back to if the next flush fails."""
        return {key: batch.first_offset for key, batch in self._batches.items()}

    def due(self) -> bool:
        """A flush is due: enough rows, or the oldest row waited long enough."""
        if self._oldest is None:
            return False
        return self._rows >= self.max_rows or self.seconds_until_due() <= 0

    def seconds_until_due(self) -> float:
        """Seconds until the oldest buffered row forces a flush."""
        if self._oldest is None:
            return self.max_age_seconds
        return self.max_age_seconds - (time.monotonic() - self._oldest)

    async def flush(
        self, partitions: set[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], int]:
        """Write batches (all, or those of `partitions`); return the next offset to commit.

        Batches are dropped whether their write succeeded or not; on failure the caller
        must not commit and re-reads them from Kafka.
        """
        keys = [k for k in self._batches if partitions is None or k in partitions]
        by_topic: dict[str, list[Batch]] = {}
        for key in keys:
            by_topic.setdefault(key[0], []).append(self._batches[key])
        try:
            for topic, batches in by_topic.items():
                if any(batch.rows for batch in batches):
                    await self.write(topic, batches)
        finally:
            for key in keys:
                self._batches.pop(key, None)
            self._rows = sum(len(b.rows) for b in self._batches.values())
            self._oldest = time.monotonic() if self._batches else None
        return {(b.topic, b.partition): b.last_offset + 1 for bs in by_topic.values() for b in bs}

    @abstractmethod
    async def write(self, topic: str, batches: list[Batch]) -> None:
        """Durably write one topic's batches, or raise `SinkError`."""
