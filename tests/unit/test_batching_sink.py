"""The batching contract: one write per topic, commits only for what was written."""

from __future__ import annotations

from typing import Any

import pytest

from sinks.batching import Batch, BatchingSink, dedup_token
from sinks.exceptions import SinkError


class RecordingSink(BatchingSink):
    def __init__(self, fail: bool = False) -> None:
        super().__init__(max_rows=4, max_age_seconds=60)
        self.fail = fail
        self.writes: list[tuple[str, list[Any], str]] = []

    async def write(self, topic: str, batches: list[Batch]) -> None:
        if self.fail:
            raise SinkError("warehouse down")
        rows = [row for batch in batches for row in batch.rows]
        self.writes.append((topic, rows, dedup_token(batches)))


async def test_flush_writes_each_topic_once_and_returns_next_offsets() -> None:
    sink = RecordingSink()
    sink.add("trades", 1, 10, 11, ["a", "b"])
    sink.add("trades", 0, 5, 5, ["c"])
    sink.add("candles", 0, 7, 7, ["x"])
    assert sink.due()  # 4 rows
    commits = await sink.flush()
    assert sorted(w[0] for w in sink.writes) == ["candles", "trades"]
    trades = next(w for w in sink.writes if w[0] == "trades")
    assert sorted(trades[1]) == ["a", "b", "c"]
    assert trades[2] == "trades:0:5-5,1:10-11"  # same offsets, same token
    assert commits == {("trades", 1): 12, ("trades", 0): 6, ("candles", 0): 8}
    assert not sink.pending


async def test_records_that_were_all_rejected_are_committed_without_a_write() -> None:
    sink = RecordingSink()
    sink.add("trades", 0, 3, 4, [])
    assert await sink.flush() == {("trades", 0): 5}
    assert sink.writes == []


async def test_failed_write_drops_the_batches_and_raises_so_nothing_is_committed() -> None:
    sink = RecordingSink(fail=True)
    sink.add("trades", 0, 0, 1, ["a", "b"])
    assert sink.first_offsets() == {("trades", 0): 0}
    with pytest.raises(SinkError):
        await sink.flush()
    assert not sink.pending  # the caller seeks back and re-reads them


async def test_flush_of_some_partitions_keeps_the_others() -> None:
    sink = RecordingSink()
    sink.add("trades", 0, 0, 0, ["a"])
    sink.add("trades", 1, 0, 0, ["b"])
    assert await sink.flush({("trades", 0)}) == {("trades", 0): 1}
    assert sink.first_offsets() == {("trades", 1): 0}
