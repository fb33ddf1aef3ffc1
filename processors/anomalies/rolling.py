"""Exact rolling median and MAD (median absolute deviation) over the last N values.

The robust baseline of every market detector. A sorted copy of the window is kept next
to the arrival order, so an update is a binary search plus one C-level list shift
(`bisect.insort`, at most N pointers), the median is an index, and the MAD is found
without materializing the deviations: below the median they are `m - x` read
backwards, above it `x - m` read forwards, two sorted sequences whose k-th smallest
element a binary search finds in O(log N). Windows of up to 256 values walk the two
runs outwards from the median instead, taking the smaller deviation each step: at those
sizes the plain loop beats the search and sorting alike (`CandleStream` calls this twice
per closed candle of every interval). Both are exact and pick the same element, so a
replay gives the same bits.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable, Iterable

# 1 / Phi^-1(3/4): MAD x this estimates the standard deviation of a normal sample.
MAD_TO_SIGMA = 1.482602218505602
# Up to this window size the MAD walks the two sorted runs (measured faster); above, it
# searches them in O(log N).
WALK_DEVIATIONS_UP_TO = 256
# `robust_z_beyond` screens against a radius this much wider than the bound needs: far
# more than the few roundings between a MAD above the radius and the z it yields.
SCREEN_MARGIN = 1.0 + 1e-6


def kth_of_two_sorted(
    first: Callable[[int], float],
    first_len: int,
    second: Callable[[int], float],
    second_len: int,
    k: int,
) -> float:
    """The k-th smallest (0-based) element of two ascending sequences given by accessors."""
    if not 0 <= k < first_len + second_len:
        raise IndexError(f"k={k} outside 0..{first_len + second_len - 1}")
    # Binary search on how many of the k+1 smallest come from `first`.
    low, high = max(0, k + 1 - second_len), min(k + 1, first_len)
    while low < high:
        taken = (low + high) // 2
        if first(taken) < second(k - taken):
            low = taken + 1
        else:
            high = taken
    from_second = k + 1 - low
    candidates = []
    if low > 0:
        candidates.append(first(low - 1))
    if from_second > 0:
        candidates.append(second(from_second - 1))
    return max(candidates)


class RollingRobust:
    """Median and MAD of the last `size` finite values pushed."""

    __slots__ = ("_order", "_sorted", "size")

    def __init__(self, size: int, values: Iterable[float] = ()) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        self.size = size
        self._order: deque[float] = deque()
        self._sorted: list[float] = []
        for value in values:
            self.push(value)

    def __len__(self) -> int:
        return len(self._order)

    def push(self, value: float) -> None:
        """Add a value, dropping the oldest once the window is full."""
        if not math.isfinite(value):
            raise ValueError(f"rolling statistics take finite values, got {value!r}")
        if len(self._order) == self.size:
            oldest = self._order.popleft()
            del self._sorted[bisect_left(self._sorted, oldest)]
        self._order.append(value)
        insort(self._sorted, value)

    def median(self) -> float:
        """Median of the window (mean of the two middle values when even)."""
        values, count = self._sorted, len(self._sorted)
        if not count:
            raise ValueError("median of an empty window")
        middle = count // 2
        return values[middle] if count % 2 else (values[middle - 1] + values[middle]) / 2

    def mad(self) -> float:
        """Median of |x - median| over the window."""
        values, count = self._sorted, len(self._sorted)
        center = self.median()
        split = bisect_left(values, center)
        middle = count // 2
        if count <= WALK_DEVIATIONS_UP_TO:
            # Merge the two ascending runs up to the middle: ~2.5 µs for a window of 60,
            # against ~4.4 µs to sort all the deviations and ~20 µs to search.
            lower, upper = split - 1, split
            previous = current = 0.0
            for _ in range(middle + 1):
                if lower >= 0 and (
                    upper >= count or center - values[lower] <= values[upper] - center
                ):
                    previous, current = current, center - values[lower]
                    lower -= 1
                else:
                    previous, current = current, values[upper] - center
                    upper += 1
            return current if count % 2 else (previous + current) / 2

        def below(i: int) -> float:
            return center - values[split - 1 - i]

        def above(i: int) -> float:
            return values[split + i] - center

        def kth(k: int) -> float:
            return kth_of_two_sorted(below, split, above, count - split, k)

        return kth(middle) if count % 2 else (kth(middle - 1) + kth(middle)) / 2

    def robust_z(self, value: float, min_sigma: float) -> tuple[float, float, float]:
        """(z, median, sigma): how many robust sigmas `value` lies from the median.

        sigma is MAD x 1.4826, floored at `min_sigma` so a flat window cannot make
        every small move infinitely unusual.
        """
        center = self.median()
        sigma = max(self.mad() * MAD_TO_SIGMA, min_sigma)
        return (value - center) / sigma, center, sigma

    def robust_z_beyond(
        self, value: float, bound: float, min_sigma: float
    ) -> tuple[float, float, float] | None:
        """`robust_z(value, min_sigma)`, or None when |z| is surely below `bound` (> 0).

        Most values are ordinary, and proving it needs no MAD: |z| < bound once the MAD
        exceeds `radius = |value - median| / (bound x 1.4826)`, that is once fewer than
        half the deviations are within the radius. Counting those takes three binary
        searches over the sorted window instead of walking to its middle deviation
        (`CandleStream` scores two values per closed candle). The deviations counted
        are the very ones the MAD picks from, so the screen never hides a z it
        would have reported.
        """
        values, count = self._sorted, len(self._sorted)
        center = self.median()
        radius = abs(value - center) * SCREEN_MARGIN / (bound * MAD_TO_SIGMA)
        split = bisect_left(values, center)
        # Below the median the deviation is `center - x`, above it `x - center`, each
        # monotone in x: a C search lands next to the edge, the loops settle it exactly.
        first = bisect_left(values, center - radius, 0, split)
        while first > 0 and center - values[first - 1] <= radius:
            first -= 1
        while first < split and center - values[first] > radius:
            first += 1
        end = bisect_right(values, center + radius, split, count)
        while end > split and values[end - 1] - center > radius:
            end -= 1
        while end < count and values[end] - center <= radius:
            end += 1
        if end - first < (count + 1) // 2:
            return None
        return self.robust_z(value, min_sigma)

    def values(self) -> list[float]:
        """The window in arrival order (JSON state)."""
        return list(self._order)
