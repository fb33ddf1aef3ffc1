"""The batching sink contract (after quix-streams' `BatchingSink`).

A sink collects rows per (topic, partition), `flush()` writes each batch with the
abstract `write()` and clears it in `finally`; the caller commits offsets only after
`flush()` returned, so a failed write is re-read from Kafka instead of being lost.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
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

    def add(self, offset: int, row: Any | None) -> None:
        """Record `offset` as consumed; keep `row` unless it was rejected (None)."""
        if self.first_offset < 0:
            self.first_offset = offset
        self.last_offset = offset
        if row is not None:
            self.rows.append(row)

    @property
    def dedup_token(self) -> str:
        """Same input offsets, same token: a retried insert is dropped by the warehouse."""
        return f"{self.topic}:{self.partition}:{self.first_offset}-{self.last_offset}"


class BatchingSink(ABC):
    """Per-partition batches, flushed on size or age."""

    def __init__(self, max_rows: int, max_age_seconds: float) -> None:
        self.max_rows = max_rows
        self.max_age_seconds = max_age_seconds
        self._batches: dict[tuple[str, int], Batch] = {}
        self._rows = 0
        self._oldest: float | None = None

    def add(self, topic: str, partition: int, offset: int, row: Any | None) -> None:
        """Buffer one consumed record (row None: consumed but rejected)."""
        batch = self._batches.get((topic, partition))
        if batch is None:
            batch = self._batches[(topic, partition)] = Batch(topic, partition)
        batch.add(offset, row)
        self._rows += row is not None
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

        A batch is dropped whether its write succeeded or not; on failure the caller
        must not commit and re-reads the batch from Kafka.
        """
        keys = [k for k in self._batches if partitions is None or k in partitions]
        commits: dict[tuple[str, int], int] = {}
        try:
            for key in keys:
                batch = self._batches[key]
                if batch.rows:
                    await self.write(batch)
                commits[key] = batch.last_offset + 1
        finally:
            for key in keys:
                self._batches.pop(key, None)
            self._rows = sum(len(b.rows) for b in self._batches.values())
            self._oldest = time.monotonic() if self._batches else None
        return commits

    @abstractmethod
    async def write(self, batch: Batch) -> None:
        """Durably write one batch, or raise `SinkError`."""
