"""Conformance of the env contract (``sim.env``) and its wrappers (``sim.wrappers``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from marl_robots.sim import wrappers as wr
from marl_robots.sim.env import COST_TERMS, REWARD_TERMS, EnvConfig, NavigationEnv, total_reward
from marl_robots.sim.tasks.navigation import NavigationConfig

POS_ATOL_M = 1e-6
N = 6


def make_env(robot="unicycle", scenario="random", n=N):
    return NavigationEnv(
        EnvConfig(task=NavigationConfig(robots=n, scenario=scenario, robot=robot))
    )


@pytest.mark.parametrize("robot", ["unicycle", "single_integrator"])
def test_reset_step_shapes_finite_jit_equals_eager(robot):
    env = make_env(robot)
    params = env.default_params()
    key = jax.random.PRNGKey(3)
    s = env.reset(key, params)
    sj = jax.jit(env.reset)(key, params)
    assert s.obs.shape == (N, env.obs_layout.dim)
    assert set(s.reward) == set(REWARD_TERMS) and set(COST_TERMS) <= set(s.cost)
    action = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (N, 2))
    a = env.step(s, action, params)
    b = jax.jit(env.step)(sj, action, params)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert_allclose(np.asarray(x, float), np.asarray(y, float), atol=1e-5)
    for leaf in jax.tree_util.tree_leaves((a.obs, a.reward, a.cost)):
        assert np.all(np.isfinite(leaf))
    for v in a.reward.values():
        assert v.shape == (N,)
    assert a.done.shape == ()


def test_observation_layout_matches_state():
    env = make_env("unicycle", "random")
    params = env.default_params()
    s = env.reset(jax.random.PRNGKey(0), params)
    o = env.obs_layout.split(s.obs)
    points = s.sensing.points
    assert_allclose(o["goal"], s.task.goal - points, atol=POS_ATOL_M)
    mask = np.asarray(o["nbr_mask"])
    assert mask.sum() > 0
    idx = np.asarray(s.sensing.graph.index)
    rel = np.asarray(points)[idx] - np.asarray(points)[:, None]
    assert_allclose(np.asarray(o["nbr_pos"])[mask], rel[mask], atol=POS_ATOL_M)
    assert np.all(np.asarray(o["nbr_pos"])[~mask] == 0)
    # The random scenario has three obstacles; each robot sees its two nearest.
    assert np.all(np.asarray(o["obst_mask"]).sum(-1) == env.config.obstacle_slots)
    x0, x1, y0, y1 = env.config.task.arena_bounds
    lower = np.stack([points[:, 0] - x0, points[:, 1] - y0], -1)
    assert_allclose(o["walls"][:, :2], lower, atol=POS_ATOL_M)
    assert_allclose(
        o["walls"][:, 2:], np.stack([x1 - points[:, 0], y1 - points[:, 1]], -1), atol=POS_ATOL_M
    )


def test_neighbour_slots_padded_for_small_teams():
    cfg = NavigationConfig(robots=2, scenario="antipodal")
    env = NavigationEnv(EnvConfig(task=cfg, sensing_radius_m=5.0))
    s = env.reset(jax.random.PRNGKey(0), env.default_params())
    o = env.obs_layout.split(s.obs)
    assert o["nbr_mask"].shape == (2, env.config.neighbours)
    assert np.asarray(o["nbr_mask"]).sum(-1).tolist() == [1, 1]


def test_vmap_determinism_and_progress_reward():
    env = wr.Vmap(make_env(), 3)
    params = env.default_params()
    s1 = jax.jit(env.reset)(jax.random.PRNGKey(5), params)
    s2 = jax.jit(env.reset)(jax.random.PRNGKey(5), params)
    assert_allclose(s1.obs, s2.obs)
    assert not np.allclose(s1.task.goal[0], s1.task.goal[1])  # envs differ
    # Driving straight at the goal at full speed earns progress ~ progress_scale per step.
    o = env.obs_layout.split(s1.obs)
    u = 0.05 * o["goal"] / jnp.linalg.norm(o["goal"], axis=-1, keepdims=True)
    s = jax.jit(env.step)(s1, u, params)
    assert np.all(np.asarray(s.reward["progress"]) > 0.2)
    assert total_reward(s, env.config.cost_weights).shape == (3, N)


def test_episode_truncation_and_auto_reset():
    base = make_env(scenario="corridor")
    env = wr.AutoReset(wr.SafetyFilter(wr.Vmap(wr.Episode(base, 5), 2)))
    params = env.default_params()
    s0 = env.reset(jax.random.PRNGKey(0), params)
    step = jax.jit(env.step)
    s = s0
    for t in range(5):
        s = step(s, jnp.zeros((2, N, 2)), params)
        assert bool(jnp.all(s.done)) == (t == 4)
    assert np.all(np.asarray(s.info["truncation"]))
    assert np.all(np.asarray(s.info["steps"]) == 0)
    # corridor is deterministic: the restarted episode is the initial layout again.
    assert_allclose(s.task.pos, s0.task.pos, atol=POS_ATOL_M)
    assert_allclose(s.obs, s0.obs, atol=1e-5)


def test_mix_steps_each_part_with_its_own_scenario():
    """``Mix`` of a corridor and a random stack = the two stacks run apart, side by side."""
    stacks = [
        wr.AutoReset(wr.Vmap(wr.Episode(make_env(scenario=sc), 4), 2))  # no filter: cheap
        for sc in ("corridor", "random")
    ]
    mix = wr.Mix(stacks, [2, 2])
    params = mix.default_params()
    key = jax.random.PRNGKey(1)
    s = mix.reset(key, params)
    apart = [e.reset(k, params) for e, k in zip(stacks, jax.random.split(key, 2))]
    rng = np.random.default_rng(0)
    mix_step = jax.jit(mix.step)
    part_steps = [jax.jit(e.step) for e in stacks]
    for _ in range(6):  # past the truncation at 4 steps: auto-reset per part
        u = jnp.asarray(rng.uniform(-0.2, 0.2, (4, N, 2)), jnp.float32)
        s = mix_step(s, u, params)
        apart = [
            f(a, u[2 * i : 2 * i + 2], params) for i, (f, a) in enumerate(zip(part_steps, apart))
        ]
    for i, a in enumerate(apart):
        assert_allclose(s.task.pos[2 * i : 2 * i + 2], a.task.pos, atol=POS_ATOL_M)
        assert_allclose(s.obs[2 * i : 2 * i + 2], a.obs, atol=1e-5)
    # the parts really are different scenarios (corridor ignores the seed: both its envs agree)
    assert_allclose(s.task.goal[0], s.task.goal[1], atol=POS_ATOL_M)
    assert float(jnp.max(jnp.abs(s.task.goal[0] - s.task.goal[2]))) > 0.1


def test_safety_filter_wrapper_blocks_ramming_commands():
    """Every robot commands full speed at its nearest neighbour: the filter keeps them apart."""
    base = make_env(scenario="antipodal", n=8)
    env = wr.SafetyFilter(base)
    params = env.default_params()
    s = env.reset(jax.random.PRNGKey(0), params)

    def body(s, _):
        o = base.obs_layout.split(s.obs)
        to_nbr = o["nbr_pos"][:, 0]
        u = 0.2 * to_nbr / jnp.maximum(jnp.linalg.norm(to_nbr, axis=-1, keepdims=True), 1e-6)
        gamma = jnp.full((8,), wr.GAMMA_BOUNDS[1])
        s = env.step(s, {"u": u, "gamma": gamma}, params)
        return s, (s.metrics["min_separation_m"], s.metrics["interventions"])

    s, (sep, interventions) = jax.jit(lambda s: jax.lax.scan(body, s, None, length=150))(s)
    assert float(sep.min()) >= float(params.robot.diameter_m)
    assert float(sep.min()) >= 0.13 - 1e-3  # the safety distance between centres
    assert float(interventions.sum()) > 0
    assert float(s.cost["collision"].sum()) == 0
