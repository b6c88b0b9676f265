"""The CBF-tuning seam of the safety filter node (``policy_onboard.tuned_gain``), ROS-free.

Truth table of the fallbacks and a property: whatever arrives on ``cbf_gain`` (any float,
infinities and NaN included, any age), the filter's gain lies within ``gamma_bounds`` or is the
fixed default - the filter never runs with a gain a policy could push outside its contract.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marl_robots.core import defaults
from marl_robots.nodes.onboard import ParameterError
from marl_robots.nodes.policy_onboard import gain_bounds, point_velocities, tuned_gain

BOUNDS = defaults.GAMMA_BOUNDS
TIMEOUT_S = 0.5
DEFAULT = defaults.GAMMA


@pytest.mark.parametrize("value,age,want,source", [
    (4.0, 0.1, 4.0, "policy"),
    (1e9, 0.1, BOUNDS[1], "policy"),
    (-3.0, 0.1, BOUNDS[0], "policy"),
    (0.0, 0.1, BOUNDS[0], "policy"),
    (4.0, 0.6, DEFAULT, "default: tuned gain 0.60 s old"),
    (math.nan, 0.1, DEFAULT, "default: non-finite tuned gain"),
    (math.inf, 0.1, DEFAULT, "default: non-finite tuned gain"),
    (math.nan, math.inf, DEFAULT, "default: no tuned gain"),
])
def test_tuned_gain_truth_table(value, age, want, source):
    assert tuned_gain(value, age, TIMEOUT_S, BOUNDS, DEFAULT) == (want, source)


@given(value=st.floats(allow_nan=True, allow_infinity=True),
       age=st.floats(min_value=0.0, allow_nan=False, allow_infinity=True))
def test_filter_gain_always_within_bounds_or_default(value, age):
    gamma, source = tuned_gain(value, age, TIMEOUT_S, BOUNDS, DEFAULT)
    if source == "policy":
        assert BOUNDS[0] <= gamma <= BOUNDS[1]
        assert age <= TIMEOUT_S and math.isfinite(value)
    else:
        assert gamma == DEFAULT


@pytest.mark.parametrize("bad", [[], [1.0], [0.0, 5.0], [5.0, 1.0], [1.0, math.inf]])
def test_gain_bounds_refused(bad):
    with pytest.raises(ParameterError, match="invalid parameter 'gamma_bounds'"):
        gain_bounds({"gamma_bounds": bad})


def test_point_velocities_as_the_env():
    import numpy as np

    p0 = np.array([[0.0, 0.0], [1.0, 1.0]])
    p1 = p0 + np.array([[0.0033, 0.0], [np.nan, 0.0]])
    v = point_velocities(p1, p0, 0.033, 0.033)
    np.testing.assert_allclose(v, [[0.1, 0.0], [0.0, 0.0]], atol=1e-12)
    assert not point_velocities(p1, None, 0.033, 0.033).any()
    assert not point_velocities(p1, p0, 1.0, 0.033).any()  # a gap in the state: no velocity
