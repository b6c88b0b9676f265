"""The PettingZoo ``ParallelEnv`` adapter passes PettingZoo's own API conformance test."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pettingzoo")
from pettingzoo.test import parallel_api_test  # noqa: E402

from marl_robots.sim.env import EnvConfig  # noqa: E402
from marl_robots.sim.pettingzoo_env import NavigationParallelEnv  # noqa: E402
from marl_robots.sim.tasks.navigation import NavigationConfig  # noqa: E402


@pytest.mark.parametrize("tune_gamma", [False, True])
def test_parallel_api(tune_gamma):
    cfg = EnvConfig(task=NavigationConfig(robots=4, scenario="random"))
    env = NavigationParallelEnv(cfg, episode_length=40, tune_gamma=tune_gamma)
    parallel_api_test(env, num_cycles=100)


def test_episode_truncates_and_seed_is_deterministic():
    cfg = EnvConfig(task=NavigationConfig(robots=3, scenario="random"))
    env = NavigationParallelEnv(cfg, episode_length=5)
    obs_a, _ = env.reset(seed=7)
    obs_b, _ = env.reset(seed=7)
    for a in env.possible_agents:
        np.testing.assert_array_equal(obs_a[a], obs_b[a])
    for _ in range(5):
        acts = {a: env.action_space(a).sample() for a in env.agents}
        _, rewards, terms, truncs, infos = env.step(acts)
        assert all(np.isfinite(r) for r in rewards.values())
        assert "cost/intervention" in infos["robot_0"]
    assert all(truncs.values()) and not any(terms.values())
    assert env.agents == []
