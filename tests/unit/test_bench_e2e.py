"""`sigflow bench e2e` refuses a ratio unless both paths left the same candles.

No speed is asserted here: speed is measured by `sigflow bench e2e`.
"""

from __future__ import annotations

import pytest

from bench.e2e import check_same_candles
from bench.report import BenchmarkError

ROW = ("binance", "BTC-USDT", "1m", 1_700_000_000_000, 10.0, 11.0, 9.5, 10.5, 42, 3.3)


def test_the_same_candles_pass_with_volumes_summed_in_another_order() -> None:
    other = (*ROW[:-1], ROW[-1] * (1 + 1e-12))
    check_same_candles([ROW], [other])


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ([ROW], []),
        ([], []),
        ([ROW], [(*ROW[:7], 10.25, *ROW[8:])]),  # another close
        ([ROW], [(*ROW[:-1], 3.4)]),  # another volume
        ([ROW], [(*ROW[:3], ROW[3] + 60_000, *ROW[4:])]),  # another window
    ],
)
def test_different_candles_refuse_a_ratio(ours: list, theirs: list) -> None:
    with pytest.raises(BenchmarkError, match="candle rows differ"):
        check_same_candles(ours, theirs)
