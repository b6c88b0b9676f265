"""The policy seam: ``POLICIES`` entries, the go-to-goal parity with ``marl-robots sim``.

``test_demo_metrics_pinned`` pins the figures of today's demo run (``make demo``: 16 unicycles,
antipodal, CBF filter, gamma 10, 2000 steps, seed 0): metrics.json of 2026-11-23 with the
discrete-time step margin (``sim.layout.filter_margins``): collisions 0, obstacle_contacts 0,
min_separation_m 0.19783, success_rate 1.0, filter_interventions 741, mean_time_to_goal_s
14.916, qp_relaxed 0, qp_infeasible 0 (before the step margin: 0.19711, 715, 14.8995).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from marl_robots.policies import POLICIES
from marl_robots.sim import wrappers as wr
from marl_robots.sim.env import EnvConfig, NavigationEnv
from marl_robots.sim.run import RunSpec, run_navigation, simulate
from marl_robots.sim.tasks.navigation import NavigationConfig

#: Tolerances of the pinned demo figures.
SEPARATION_ATOL_M = 2e-3
TIME_TO_GOAL_ATOL_S = 0.2
INTERVENTIONS_RTOL = 0.05
#: Parity of the env + policy path with the closed loop (identical computations).
PARITY_ATOL_M = 1e-5
#: A masked-in neighbour moved by 0.3 m must move the network output at least this much.
OUTPUT_CHANGE_MIN = 1e-3
#: Changing a masked-out slot's padding may change the output by float noise only.
OUTPUT_ATOL = 1e-6


def test_demo_metrics_pinned():
    m = run_navigation(RunSpec(), None, animation=False, quiet=True)
    assert m["collisions"] == 0 and m["obstacle_contacts"] == 0
    assert m["success_rate"] == 1.0
    assert m["qp_infeasible"] == 0 and m["qp_relaxed"] == 0
    assert m["min_separation_m"] == pytest.approx(0.19783, abs=SEPARATION_ATOL_M)
    assert m["mean_time_to_goal_s"] == pytest.approx(14.916, abs=TIME_TO_GOAL_ATOL_S)
    assert m["filter_interventions"] == pytest.approx(741, rel=INTERVENTIONS_RTOL)


def test_go_to_goal_policy_through_env_matches_closed_loop():
    """Env + SafetyFilter wrapper + POLICIES['go-to-goal'] == the closed loop of ``sim``."""
    steps = 400
    env = wr.SafetyFilter(NavigationEnv(EnvConfig(task=NavigationConfig(robots=16))))
    params = env.default_params()
    policy = POLICIES.get("go-to-goal")(env)
    pp = policy.init()
    assert not policy.learned

    def body(s, _):
        s = env.step(s, policy.apply(pp, s.obs), params)
        return s, s.task.pos

    s0 = env.reset(jax.random.PRNGKey(0), params)
    _, pos = jax.jit(lambda s: jax.lax.scan(body, s, None, length=steps))(s0)
    _, _, traj, _, _ = simulate(RunSpec(steps=steps))
    assert_allclose(np.asarray(pos), traj["pos"][1:], atol=PARITY_ATOL_M)


def _env(n=5):
    return wr.SafetyFilter(
        NavigationEnv(EnvConfig(task=NavigationConfig(robots=n, scenario="random")))
    )


@pytest.mark.parametrize("name", POLICIES.names())
def test_policy_conformance(name):
    """jit/vmap, shapes, finiteness, determinism, decentralisation and bounded outputs."""
    env = _env()
    params = env.default_params()
    policy = POLICIES.get(name)(env)
    pp = policy.init(jax.random.PRNGKey(0))
    state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(
        jax.random.split(jax.random.PRNGKey(1), 3), params
    )
    obs = state.obs
    apply = jax.jit(policy.apply)  # eager dispatch of every op is slow
    act = apply(pp, obs)
    act2 = apply(pp, obs + 0.0)
    u = act["u"] if isinstance(act, dict) else act
    assert u.shape == (3, env.n, 2)
    for a, b in zip(jax.tree_util.tree_leaves(act), jax.tree_util.tree_leaves(act2)):
        assert_allclose(a, b, atol=1e-6)
        assert np.all(np.isfinite(a))
    assert np.all(np.abs(np.asarray(u)) <= float(params.robot.v_max) + 1e-6)
    # Robot 0's action depends only on its own observation row.
    noisy = obs.at[:, 1:].add(jax.random.normal(jax.random.PRNGKey(2), obs[:, 1:].shape))
    act3 = apply(pp, noisy)
    for a, b in zip(jax.tree_util.tree_leaves(act), jax.tree_util.tree_leaves(act3)):
        assert_allclose(a[:, 0], b[:, 0], atol=1e-6)
    # Any robot count: the same params run a 9-robot team.
    env9 = _env(9)
    s9 = jax.jit(env9.reset)(jax.random.PRNGKey(4), params)
    assert jax.tree_util.tree_leaves(apply(pp, s9.obs))[0].shape[0] == 9
    if policy.learned:
        # Extreme raw actions still map inside the bounds.
        raw = jnp.array([-1e6, -3.0, 0.0, 3.0, 1e6])[:, None] * jnp.ones((5, policy.raw_dim))
        a = jax.jit(policy.to_action)(raw, state.obs[0])
        if isinstance(a, dict):
            g = np.asarray(a["gamma"])
            assert np.all((g >= wr.GAMMA_BOUNDS[0]) & (g <= wr.GAMMA_BOUNDS[1] + 1e-4))
        else:
            assert np.all(np.abs(np.asarray(a)) <= float(params.robot.v_max) + 1e-6)


@pytest.mark.parametrize("name", ["gnn", "cbf-tuning"])
def test_gnn_permutation_invariant_in_neighbours(name):
    env = _env(7)
    params = env.default_params()
    policy = POLICIES.get(name)(env)
    pp = policy.init(jax.random.PRNGKey(0))
    # Give the attention non-trivial weights so that the test is not vacuous.
    pp["net"] = jax.tree_util.tree_map(lambda x: x * 30.0, pp["net"])
    obs = jax.jit(env.reset)(jax.random.PRNGKey(1), params).obs
    lay = env.obs_layout
    i0 = lay.self_dim
    nbr = obs[:, i0 : i0 + lay.k * lay.nbr_dim].reshape(env.n, lay.k, lay.nbr_dim)
    perm = jnp.array([3, 0, 5, 1, 4, 2])
    shuffled = obs.at[:, i0 : i0 + lay.k * lay.nbr_dim].set(nbr[:, perm].reshape(env.n, -1))
    dist = jax.jit(policy.distribution)
    mean, _ = dist(pp, obs)
    mean_s, _ = dist(pp, shuffled)
    assert_allclose(mean, mean_s, atol=1e-4)
    assert float(jnp.std(mean)) > 1e-3


def _mask_columns(lay) -> np.ndarray:
    """Observation columns of the neighbour and obstacle mask flags."""
    nbr = lay.self_dim + lay.nbr_dim * np.arange(lay.k) + 2 * lay.d
    obst = lay.self_dim + lay.k * lay.nbr_dim + lay.obst_dim * np.arange(lay.m) + lay.d + 1
    return np.concatenate([nbr, obst])


@pytest.mark.parametrize("name", ["gnn", "cbf-tuning"])
def test_gnn_masks_come_from_the_raw_observation(name):
    """A masked-in neighbour moves -> the output changes; masked-out padding -> it does not.

    With realistic normalisation statistics (flags mostly 1: mean 0.9, std 0.3) a normalised
    flag of 1 reads 0.33; a network taking its masks from the normalised observation ignores
    every neighbour (the known defect) and fails the first check.
    """
    env = NavigationEnv(EnvConfig(task=NavigationConfig(robots=4, scenario="random")))
    lay = env.obs_layout
    policy = POLICIES.get(name)(env)
    pp = policy.init(jax.random.PRNGKey(0))
    # Output layer scaled up from its near-zero init so the output reflects the network.
    pp["net"]["params"]["out"] = jax.tree_util.tree_map(
        lambda x: x * 100.0, pp["net"]["params"]["out"]
    )
    cols = _mask_columns(lay)
    pp["obs_mean"] = pp["obs_mean"].at[cols].set(0.9)
    pp["obs_std"] = pp["obs_std"].at[cols].set(0.3)
    # One robot: goal 1 m ahead, walls 1 m away, neighbour slot 0 real (0.3 m ahead, 0.1 m to
    # the left, approaching), the other neighbour slots padding, both obstacles real.
    obs = np.zeros((1, lay.dim), np.float32)
    obs[0, 0] = 1.0
    obs[0, 2 * lay.d : 4 * lay.d] = 1.0
    slot = lambda j: lay.self_dim + j * lay.nbr_dim  # noqa: E731
    obs[0, slot(0) : slot(0) + 2 * lay.d] = [0.3, 0.1, -0.2, 0.0]
    obs[0, cols] = 1.0
    obs[0, cols[1 : lay.k]] = 0.0
    i1 = lay.self_dim + lay.k * lay.nbr_dim
    for j, (x, y, r) in enumerate([(0.5, 0.6, 0.45), (0.5, -0.6, 0.45)][: lay.m]):
        obs[0, i1 + j * lay.obst_dim : i1 + j * lay.obst_dim + lay.d + 1] = [x, y, r]
    obs = jnp.asarray(obs)
    assert lay.split(obs)["nbr_mask"].tolist() == [[True] + [False] * (lay.k - 1)]
    dist = jax.jit(policy.distribution)
    mean, _ = dist(pp, obs)
    moved = obs.at[0, slot(0) : slot(0) + lay.d].add(0.3)
    padded = obs.at[0, slot(1) : slot(1) + 2 * lay.d].set(
        jax.random.normal(jax.random.PRNGKey(2), (2 * lay.d,))
    )
    mean_moved, _ = dist(pp, moved)
    mean_padded, _ = dist(pp, padded)
    assert float(jnp.max(jnp.abs(mean_moved - mean))) > OUTPUT_CHANGE_MIN
    assert_allclose(mean_padded, mean, atol=OUTPUT_ATOL)
