"""Stale feeds: an exchange:symbol that stops trading while event time moves on.

Pure, per trades partition. Wall clock never decides: a feed is stale when the event
time of the *other* feeds on its partition (their newest trade, minus the allowed
lateness: the partition's watermark) runs ahead of the feed's last trade by many of its
usual gaps between trades. So a replay, however fast, flags exactly the same silences,
and a backlog being caught up flags nothing that was not silent in event time.

Records are taken in partition (offset) order, one at a time and every trade of a
record in turn, so the result does not depend on how they were cut into micro-batches.
Every trade counts for its feed's gaps; the partition's event time (its watermark)
moves only with each record's first trade, since a batch record spans one feed's trades
and the others' trades of that span arrive in their own records after it.
Each feed keeps its last trade time, an exponential average of its gaps (`gap_span`
trades) and the highest severity already reported for the current silence. A min-heap
holds, per watched feed, a lower bound of when it next crosses a threshold; only entries
the watermark passes are looked at, so the per-trade cost is a dictionary update and one
comparison.

Score = silence / usual gap. One anomaly per severity level per silence (the highest
level reached when the watermark passes it); the next trade of the feed ends the
silence. Limit: a feed alone on its partition has no one to be compared against.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from processors.anomalies.findings import Finding
from processors.anomalies.rules import StaleFeedRules

# Per feed: [last trade ts, usual gap in ms, trades seen, severity level reported or -1]
LAST, GAP, TRADES, LEVEL = 0, 1, 2, 3
MIN_GAP_MS = 1.0  # many trades share a millisecond; the usual gap is floored at 1 ms


class FeedClock:
    """Watches the feeds of one partition; state is plain JSON for a Faust table."""

    def __init__(
        self,
        rules: StaleFeedRules,
        lateness_ms: int,
        offset: int = -1,
        newest: int | None = None,
        feeds: dict[bytes, list[Any]] | None = None,
    ) -> None:
        self.rules = rules
        self.lateness_ms = lateness_ms
        self.offset = offset
        self.newest = newest
        self.feeds: dict[bytes, list[Any]] = feeds or {}
        self._levels = rules.thresholds.levels()

    def observe(
        self, records: Iterable[tuple[int, bytes, list[int]]]
    ) -> tuple[list[Finding], list[int]]:
        """Fold in records as (offset, record key, event times of its trades), in offset
        order; the stale findings and the lateness (ms behind the feed's newest trade) of
        trades that arrived out of order.

        Records at or below the last offset folded in are skipped (re-read after a restart);
        every trade of the others is folded, in order.
        """
        rules, feeds, levels = self.rules, self.feeds, self._levels
        alpha = 2.0 / (rules.gap_span + 1)
        min_trades, lateness = rules.min_trades, self.lateness_ms
        heap = [
            (self._deadline(feed), key)
            for key, feed in feeds.items()
            if feed[TRADES] >= min_trades and feed[LEVEL] < len(levels) - 1
        ]
        heapq.heapify(heap)
        queued = {key for _, key in heap}
        findings: list[Finding] = []
        late: list[int] = []
        offset, newest = self.offset, self.newest
        for record_offset, key, times in records:
            if record_offset <= offset:
                continue
            offset = record_offset
            if not times:
                continue
            for ts in times:
                feed = feeds.get(key)
                if feed is None:
                    feeds[key] = [ts, 0.0, 1, -1]
                else:
                    last = feed[LAST]
                    if ts >= last:
                        gap = ts - last
                        feed[GAP] = (
                            gap if feed[TRADES] == 1 else feed[GAP] + alpha * (gap - feed[GAP])
                        )
                        feed[LAST] = ts
                        if feed[LEVEL] >= 0:  # the silence is over: watch for the next one
                            feed[LEVEL] = -1
                            if key not in queued and feed[TRADES] >= min_trades:
                                heapq.heappush(heap, (self._deadline(feed), key))
                                queued.add(key)
                    else:
                        late.append(last - ts)
                    trades = feed[TRADES] = feed[TRADES] + 1
                    if trades == min_trades and key not in queued:
                        heapq.heappush(heap, (self._deadline(feed), key))
                        queued.add(key)
            # The partition's event time moves to the record's first trade only: a batch
            # record holds one feed's trades over its whole span, and the other feeds'
            # trades of that span come in their own records, after it.
            start = times[0]
            if newest is None or start > newest:
                newest = start
                watermark = start - lateness
                while heap and heap[0][0] <= watermark:
                    _, due = heapq.heappop(heap)
                    queued.discard(due)
                    self._check(due, feeds[due], watermark, findings)
                    if feeds[due][LEVEL] < len(levels) - 1:
                        heapq.heappush(heap, (self._deadline(feeds[due]), due))
                        queued.add(due)
        self.offset, self.newest = offset, newest
        return findings, late

    def _silence_needed(self, feed: list[Any], level: int) -> float:
        return max(self._levels[level][1] * max(feed[GAP], MIN_GAP_MS), self.rules.min_silence_ms)

    def _deadline(self, feed: list[Any]) -> float:
        """When the feed crosses its next severity level if it stays silent."""
        return feed[LAST] + self._silence_needed(feed, feed[LEVEL] + 1)

    def _check(self, key: bytes, feed: list[Any], watermark: int, findings: list[Finding]) -> None:
        silence = watermark - feed[LAST]
        reached = feed[LEVEL]
        for level in range(feed[LEVEL] + 1, len(self._levels)):
            if silence >= self._silence_needed(feed, level):
                reached = level
        if reached == feed[LEVEL]:
            return  # the feed traded since this deadline was queued
        feed[LEVEL] = reached
        usual = max(feed[GAP], MIN_GAP_MS)
        score = silence / usual
        subject = key.decode()
        exchange, _, symbol = subject.partition(":")
        findings.append(
            Finding(
                kind="stale_feed",
                subject=subject,
                exchange=exchange,
                symbol=symbol,
                ts=watermark,
                score=score,
                severity=self._levels[reached][0],
                observed=float(silence),
                expected=usual,
                explanation=(
                    f"no trade on {exchange} {symbol} for {silence / 1000:,.1f} s of event time "
                    f"while the other feeds on its partition moved on; it usually trades every "
                    f"{usual / 1000:.3g} s, so the silence is {score:,.0f}x its usual gap"
                ),
            )
        )

    def to_dict(self) -> dict[str, Any]:
        feeds = {key.decode(): feed for key, feed in self.feeds.items()}
        return {"offset": self.offset, "newest": self.newest, "feeds": feeds}

    @classmethod
    def from_dict(
        cls, rules: StaleFeedRules, lateness_ms: int, data: dict[str, Any] | None
    ) -> FeedClock:
        if data is None:
            return cls(rules, lateness_ms)
        feeds = {key.encode(): list(feed) for key, feed in data["feeds"].items()}
        return cls(rules, lateness_ms, data["offset"], data["newest"], feeds)
