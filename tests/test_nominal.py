"""``nominal.cooperative_go_to_goal_one`` (plain floats, the onboard policy's residual base)
equals the array ``cooperative_go_to_goal`` that the simulation and the other nodes run."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from marl_robots.controllers import nominal
from marl_robots.policies.runtime import go_to_goal_from_obs, go_to_goal_one_from_obs, load_bundle
from marl_robots.sim.env import EnvConfig, NavigationEnv

#: Float64 array version vs the float version [m/s]: rounding only.
SCALAR_TOL = 1e-12
#: Float32 array version vs the float version on observation rows [m/s].
ROW_TOL = 2e-6

coord = st.floats(-3.0, 3.0, allow_nan=False)
near = st.floats(-0.4, 0.4, allow_nan=False)  # inside the bias and make-way radii
point = st.tuples(st.one_of(coord, near), st.one_of(coord, near))


@settings(max_examples=300, deadline=None)
@given(
    goal=point,
    nbr=st.lists(st.tuples(point, st.booleans()), min_size=0, max_size=6),
    obstacles=st.lists(st.tuples(point, st.floats(0.05, 0.5), st.booleans()), max_size=3),
    bias=st.sampled_from([0.0, 0.3]),
    make_way=st.sampled_from([0.0, 0.5]),
)
def test_one_robot_equals_the_array_version(goal, nbr, obstacles, bias, make_way):
    k, o = max(len(nbr), 1), max(len(obstacles), 1)
    nbr_xy = np.zeros((k, 2))
    nbr_mask = np.zeros(k, bool)
    for j, (p, keep) in enumerate(nbr):
        nbr_xy[j], nbr_mask[j] = p, keep
    obst = np.ones((o, 3))
    obst_mask = np.zeros(o, bool)
    for j, (p, r, keep) in enumerate(obstacles):
        obst[j], obst_mask[j] = (*p, r), keep
    args = (0.13, 0.0955, 1.0, 0.2, bias, make_way, 0.15)
    want = nominal.cooperative_go_to_goal(np.zeros(2), np.asarray(goal, float), nbr_xy, nbr_mask,
                                          obst, obst_mask, *args)
    got = nominal.cooperative_go_to_goal_one(
        goal, [tuple(p) for p, keep in nbr if keep],
        [(*p, r) for p, r, keep in obstacles if keep], *args)
    np.testing.assert_allclose(got, want, atol=SCALAR_TOL, rtol=0)


def test_shipped_bundle_rows_take_the_float_path_with_the_same_result():
    """On observations of a real rollout, one row at a time (the onboard path) equals the
    batched array path, for the shipped residual ``gnn`` bundle; the policy output as well."""
    import jax  # noqa: PLC0415

    from marl_robots.core.paths import content_path  # noqa: PLC0415
    from marl_robots.sim.tasks.navigation import NavigationConfig  # noqa: PLC0415

    bundle = load_bundle(content_path("policies", "navigation_gnn", "bundle"))
    manifest = bundle.manifest
    assert manifest["action"].get("residual") and manifest["nominal"]["bias"]
    env = NavigationEnv(EnvConfig(task=NavigationConfig(robots=8, scenario="random")))
    params = env.default_params()
    state = env.reset(jax.random.PRNGKey(3), params)
    rows = []
    for _ in range(40):
        obs = np.asarray(state.obs, np.float32)
        rows.append(obs)
        u = np.asarray(bundle(obs), np.float32)
        state = env.step(state, u, params)
    obs = np.concatenate(rows)
    many = go_to_goal_from_obs(manifest, obs)
    one = np.stack([go_to_goal_one_from_obs(manifest, row) for row in obs])
    np.testing.assert_allclose(one, many, atol=ROW_TOL, rtol=0)
    batched = bundle(obs)
    single = np.concatenate([bundle(row[None]) for row in obs])
    np.testing.assert_allclose(single, batched, atol=ROW_TOL, rtol=0)
    assert np.abs(many).max() > 0.05  # the commands are not all zero
