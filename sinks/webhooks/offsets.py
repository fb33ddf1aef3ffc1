"""Which offsets may be committed while records finish out of order (pure).

Deliveries of one partition run concurrently, so record 7 may be done while record 5
still waits for a slow receiver. The committable offset of a partition is the lowest
record still in progress (or one past the last record started): committing further
would lose record 5 in a crash.
"""

from __future__ import annotations

from collections.abc import Iterable

Partition = tuple[str, int]


class OffsetTracker:
    """Records in progress per partition, and the offsets safe to commit."""

    def __init__(self) -> None:
        self._in_progress: dict[Partition, set[int]] = {}
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def start(self, partition: Partition, offset: int) -> None:
        """Record `offset` is being worked on (offsets start in increasing order)."""
        self._in_progress.setdefault(partition, set()).add(offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def finish(self, partition: Partition, offset: int) -> None:
        """Record `offset`'s outcome is durable."""
        self._in_progress.get(partition, set()).discard(offset)

    def skip(self, partition: Partition, offset: int) -> None:
        """Record `offset` needs no work (no subscriber): done as soon as it is seen."""
        self.start(partition, offset)
        self.finish(partition, offset)

    def in_progress(self) -> int:
        return sum(len(offsets) for offsets in self._in_progress.values())

    def committable(self) -> dict[Partition, int]:
        """Offsets to commit now: only partitions that moved since `committed()`."""
        ready = {}
        for partition, after_last in self._next.items():
            pending = self._in_progress.get(partition)
            offset = min(pending) if pending else after_last
            if offset != self._committed.get(partition):
                ready[partition] = offset
        return ready

    def committed(self, offsets: dict[Partition, int]) -> None:
        """These offsets were committed to Kafka."""
        self._committed.update(offsets)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions this worker lost: their next owner re-reads what was not committed."""
        for partition in partitions:
            self._in_progress.pop(partition, None)
            self._next.pop(partition, None)
            self._committed.pop(partition, None)
