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


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(-1e3, 1e3), st.sampled_from([0.0, 1.0, -2.5, 1e-12])),
        min_size=1,
        max_size=80,
    ),
    st.one_of(st.floats(-2e3, 2e3), st.sampled_from([0.0, 1.0, -2.5, 4.0])),
    st.sampled_from([0.5, 1.0, 3.0, 4.0]),
    st.sampled_from([0.0, 1e-9, 0.5]),
)
def test_the_screened_z_hides_only_scores_below_the_bound(
    values: list[float], value: float, bound: float, min_sigma: float
) -> None:
    window = RollingRobust(len(values), values)
    if min_sigma == 0.0 and window.mad() == 0.0:
        return  # robust_z divides by zero: detectors always floor sigma above 0
    screened = window.robust_z_beyond(value, bound, min_sigma)
    exact = window.robust_z(value, min_sigma)
    assert (screened is None and abs(exact[0]) < bound) or screened == exact


def test_the_screen_decides_at_the_edge_from_the_deviations_themselves() -> None:
    # Median 0, MAD exactly 1: a value 1.4826 x bound away scores the bound itself.
    window = RollingRobust(5, [-2.0, -1.0, 0.0, 1.0, 2.0])
    edge = rolling.MAD_TO_SIGMA * 3.0
    assert window.robust_z_beyond(edge, 3.0, 1e-9) == window.robust_z(edge, 1e-9)
    assert window.robust_z_beyond(edge * 0.99, 3.0, 1e-9) is None
