"""DAgger imitation (``policies/imitation.py``): labels are the teacher's, the fit learns them,
and the written folder is an ordinary policy that ``eval`` runs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_robots.policies.evaluate import evaluate
from marl_robots.policies.gnn import GNNPolicy
from marl_robots.policies.heuristic import CorridorYield
from marl_robots.policies.imitation import _collector, _fit, main
from marl_robots.policies.mappo import TrainConfig
from marl_robots.sim.env import NavigationEnv

ROBOTS = 4
ENVS = 2
STEPS = 60
#: Labels against the teacher recomputed on the same observations: float32 rounding [m/s].
LABEL_ATOL = 1e-6
#: The fit must at least halve the student's squared command error to the teacher.
FIT_RATIO = 0.5


@pytest.fixture(scope="module")
def setup():
    config = TrainConfig(policy="gnn", robots=ROBOTS, scenario="corridor", residual=1.0)
    base = NavigationEnv(config.env_config())
    env_params = base.default_params()
    student = GNNPolicy(base, env_params, hidden=16, residual=1.0)
    teacher = CorridorYield(base, env_params)
    collect = _collector(config, student, teacher, ENVS, STEPS)
    return student, teacher, collect


def _teacher_on(teacher, tp, obs):
    flat = obs.reshape((-1,) + obs.shape[-2:])  # [batch, n, dim]
    return jax.vmap(lambda o: teacher.apply(tp, o))(flat).reshape(obs.shape[:-1] + (-1,))


def test_labels_are_the_teachers_command_on_the_visited_observations(setup):
    """Student rollouts with noise (a DAgger iteration) are labelled with the teacher's action."""
    student, teacher, collect = setup
    tp = teacher.init()
    sp = student.init(jax.random.PRNGKey(1))
    obs, target, _ = collect(sp, tp, jax.random.PRNGKey(2), True, jnp.float32(0.3))
    assert obs.shape[:3] == (STEPS, ENVS, ROBOTS) and target.shape == (STEPS, ENVS, ROBOTS, 2)
    np.testing.assert_allclose(target, _teacher_on(teacher, tp, obs), atol=LABEL_ATOL)
    # the student acted (its untrained command differs from the teacher's somewhere)
    acted = jax.vmap(lambda o: student.apply(sp, o))(obs.reshape((-1,) + obs.shape[-2:]))
    assert float(jnp.max(jnp.abs(acted.reshape(target.shape) - target))) > 1e-3


def test_fit_reduces_the_error_to_the_teacher(setup):
    """Adam on the aggregate: the student's executed command moves toward the teacher's."""
    student, teacher, collect = setup
    tp = teacher.init()
    obs, target, _ = collect(
        student.init(jax.random.PRNGKey(0)), tp, jax.random.PRNGKey(3), False, jnp.float32(0.3)
    )
    dim = obs.shape[-1]
    obs = obs.reshape(-1, ROBOTS, dim)
    target = target.reshape(-1, ROBOTS, 2)
    params = student.init(jax.random.PRNGKey(4))
    params["obs_mean"] = jnp.mean(obs.reshape(-1, dim), 0)
    params["obs_std"] = jnp.sqrt(jnp.var(obs.reshape(-1, dim), 0) + 1e-8)

    def mse(p):  # of the executed (clipped) command, computed here, not by _fit
        u = jax.vmap(lambda o: student.apply(p, o))(obs)
        return float(jnp.mean(jnp.sum((u - target) ** 2, -1)))

    before = mse(params)
    fitted, loss = _fit(student, params, obs, target, jax.random.PRNGKey(5), 20, 16, 3e-3)
    after = mse(fitted)
    print(f"MSE to the teacher: {before:.5f} -> {after:.5f} (m/s)^2; fit loss {loss:.5f}")
    assert np.isfinite(loss)
    assert after < FIT_RATIO * before, (before, after)


def test_main_writes_a_policy_folder_that_eval_runs(tmp_path):
    argv = ["--robots", "3", "--scenario", "random", "--iterations", "1", "--envs", "2"]
    assert main([*argv, "--steps", "20", "--out", str(tmp_path / "run")]) == 0
    folder = tmp_path / "run" / "policy"
    meta = json.loads((folder / "policy.json").read_text())
    assert meta["policy"] == "gnn" and meta["training"]["method"] == "dagger"
    assert meta["training"]["teacher"] == CorridorYield.name
    assert meta["policy_kwargs"]["residual"] == 1.0
    m, rows = evaluate(str(folder), "random", 3, episodes=1, steps=20)
    assert m["policy"] == "gnn" and m["episodes"] == 1 and len(rows) == 1
    assert m["collisions"] == 0
