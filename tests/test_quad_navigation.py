"""Task ``quad_navigation`` on the env contract: shapes, purity, vmap, and closed-loop episodes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from marl_robots.sim.env import METRIC_NAMES, REWARD_TERMS
from marl_robots.sim.robots.quadrotor import AERO_OFF
from marl_robots.sim.tasks import quad_navigation as qn

EPISODE_STEPS = 500  # 10 s at 50 Hz
#: A velocity hold (zero setpoint) keeps drones within this of their start over 1 s [m].
HOLD_ATOL_M = 0.01


def _env(scenario="antipodal", robots=8, **task):
    config = qn.QuadNavigationConfig(robots=robots, scenario=scenario, **task)
    return qn.QuadNavigationEnv(qn.QuadEnvConfig(task=config))


def _episode(env, params, key, steps=EPISODE_STEPS):
    def body(s, _):
        s = env.step(s, qn.go_to_goal(s), params)
        return s, s.metrics

    return jax.jit(lambda k: jax.lax.scan(body, env.reset(k, params), None, length=steps))(key)


@pytest.mark.parametrize("scenario", qn.QUAD_SCENARIOS)
def test_reset_step_contract(scenario):
    env = _env(scenario, robots=5)
    params = env.default_params()
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    n, d = 5, 3
    assert env.d == d and env.action_dim == d
    assert state.obs.shape == (3, n, env.obs_layout.dim) and state.obs.dtype == jnp.float32
    assert state.task.quad.pos.shape == (3, n, d) and state.task.goal.shape == (3, n, d)
    assert set(state.reward) == set(REWARD_TERMS)
    assert set(METRIC_NAMES) <= set(state.metrics)
    assert np.all(np.asarray(state.metrics["min_separation_m"]) > 0.3)
    views = env.obs_layout.split(state.obs)
    assert_allclose(views["goal"], state.task.goal - state.task.quad.pos, atol=1e-6)
    # Pure and deterministic; vmap over params (mass) is domain randomisation.
    masses = jnp.array([0.025, 0.027, 0.03], jnp.float32)
    batched = jax.vmap(lambda m: params._replace(robot=params.robot._replace(mass_kg=m)))(masses)
    action = jnp.zeros((3, n, d), jnp.float32)
    step = jax.jit(jax.vmap(env.step))
    a, b = step(state, action, batched), step(state, action, batched)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert_array_equal(np.asarray(x), np.asarray(y))
    assert np.all(np.asarray(a.task.t) == 1)
    # A drone lighter than the model the controller assumes climbs; a heavier one sinks.
    dz = np.asarray(a.task.quad.pos[..., 2] - state.task.quad.pos[..., 2])
    assert np.all(dz[0] > dz[1]) and np.all(dz[1] > dz[2])


def test_zero_velocity_holds_position():
    env = _env("random", robots=4)
    params = env.default_params()
    state = env.reset(jax.random.PRNGKey(3), params)

    def body(s, _):
        return env.step(s, jnp.zeros((4, 3), jnp.float32), params), None

    end, _ = jax.jit(lambda s: jax.lax.scan(body, s, None, length=50))(state)
    assert_allclose(end.task.quad.pos, state.task.quad.pos, atol=HOLD_ATOL_M)


def test_random_scenario_drones_reach_their_goals():
    env = _env("random", robots=8)
    end, metrics = _episode(env, env.default_params(), jax.random.PRNGKey(1))
    assert float(metrics["success"][-1]) == 1.0
    assert np.all(np.asarray(end.task.reached_step) > 0)
    assert float(jnp.min(metrics["min_separation_m"])) > 0.2
    assert bool(end.done)


def test_antipodal_swap_without_filter_collides():
    """All eight drones cross the sphere's centre together: without a filter they collide."""
    env = _env("antipodal", robots=8, aero=AERO_OFF)
    end, metrics = _episode(env, env.default_params(), jax.random.PRNGKey(0))
    assert float(jnp.max(metrics["colliding_pairs"])) > 0
    assert float(jnp.min(metrics["min_separation_m"])) < float(
        qn.collision_distance_m(env.default_params().robot)
    )
    assert float(metrics["success"][-1]) == 1.0  # nothing stops them: they fly through


def test_unknown_scenario_names_the_known_ones():
    with pytest.raises(KeyError, match="known scenarios: antipodal, random"):
        qn.QuadNavigationConfig(scenario="sphere")
