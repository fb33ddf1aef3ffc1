"""Which trades a feed has already published, and where a sequence has a hole.

Pure bookkeeping, shared by every connection of one exchange feed:

- exchanges with consecutive trade ids keep one high-water mark per symbol: an id at or
  below it is a duplicate, an id beyond the next one is a gap to backfill (O(symbols)
  memory, exact);
- other exchanges remember the most recent `capacity` (symbol, trade id) pairs, oldest
  forgotten first, which bounds memory while catching the duplicates a reconnect or a
  REST backfill overlap can produce.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing trade ids `first`..`last` (inclusive) of one symbol."""

    symbol: str
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class SequenceTracker:
    """High-water mark of consecutive trade ids per symbol."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def last(self, symbol: str) -> int | None:
        return self._last.get(symbol)

    def is_duplicate(self, symbol: str, sequence: int) -> bool:
        last = self._last.get(symbol)
        return last is not None and sequence <= last

    def gap_before(self, symbol: str, sequence: int) -> Gap | None:
        """The ids missing between what was published and `sequence` (None: no hole)."""
        last = self._last.get(symbol)
        if last is None or sequence <= last + 1:
            return None
        return Gap(symbol, last + 1, sequence - 1)

    def advance(self, symbol: str, sequence: int) -> None:
        if sequence > self._last.get(symbol, sequence - 1):
            self._last[symbol] = sequence


class RecentTradeIds:
    """The most recent `capacity` (symbol, trade id) pairs, for exchanges without sequence."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._ids

    def add(self, symbol: str, trade_id: str) -> bool:
        """Remember a trade; False if it was already remembered (a duplicate)."""
        key = (symbol, trade_id)
        if key in self._ids:
            return False
        self._ids[key] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True
