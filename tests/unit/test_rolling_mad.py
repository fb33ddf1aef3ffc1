"""The two MAD paths of `RollingRobust` (a walk of the sorted runs for small windows,
binary search for large ones) give the same bits, and both equal numpy's median absolute
deviation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.anomalies import rolling
from processors.anomalies.rolling import RollingRobust


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, 1.0, -2.5])),
        min_size=1,
        max_size=300,
    )
)
def test_both_mad_paths_pick_the_same_deviation(values: list[float]) -> None:
    window = RollingRobust(len(values), values)
    walked = window.mad()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rolling, "WALK_DEVIATIONS_UP_TO", 0)
        searched = window.mad()
    assert walked == searched
    center = np.median(values)
    assert walked == pytest.approx(np.median(np.abs(np.asarray(values) - center)), abs=1e-9)
