"""The JAX side of ``nodes.sitl_compare`` starts from the layout the ROS side is given.

``fleet_from_scenario(seed=s)`` (the fleet ``sim_node`` runs) resets the task with
``PRNGKey(s)``; ``evaluate``'s episodes reset from splits of it, another ``random`` layout (the
side-by-side once compared different episodes on ``random``: arrivals 8.1 vs 10.8 s).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from marl_robots.nodes import sitl_compare
from marl_robots.nodes.fleet import fleet_from_scenario
from marl_robots.sim import wrappers as wr
from marl_robots.sim.env import EnvConfig, NavigationEnv
from marl_robots.sim.tasks.navigation import NavigationConfig

#: Start poses of the two sides [m, rad]: the same reset, float32 -> float64 only.
LAYOUT_TOL = 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_reset_keys_give_the_ros_fleet_layout(seed):
    fleet = fleet_from_scenario(8, "random", seed)
    ros = np.array([r.initial_pose for r in fleet.robots])
    base = NavigationEnv(EnvConfig(task=NavigationConfig(robots=8, scenario="random")))
    env = wr.Vmap(base, 1)
    params = base.default_params()
    same = env.reset(jax.random.PRNGKey(seed)[None], params)
    split = env.reset(jax.random.PRNGKey(seed), params)

    def poses(s):
        return np.c_[np.asarray(s.task.pos[0]), np.asarray(s.task.yaw[0])]

    np.testing.assert_allclose(poses(same), ros, atol=LAYOUT_TOL, rtol=0)
    assert np.abs(poses(split) - ros).max() > 0.1  # what the JAX side used to run


def test_jax_episode_passes_the_ros_reset_key(monkeypatch):
    seen = {}

    def fake_evaluate(*args, reset_keys=None, **kwargs):
        seen["keys"] = np.asarray(reset_keys)
        row = {"reached_rate": 1.0, "mean_time_to_goal_s": 1.0, "min_separation_m": 0.2,
               "collisions": 0, "filter_interventions": 0, "success_rate": 1.0}
        return {}, [row]

    monkeypatch.setattr("marl_robots.policies.evaluate.evaluate", fake_evaluate)
    sitl_compare.jax_episode("navigation_gnn", "random", 8, 3, 10)
    np.testing.assert_array_equal(seen["keys"], np.asarray(jax.random.PRNGKey(3)[None]))
