"""MAPPO: finite gradients, determinism, checkpoint round-trip, and a CPU learning test.

The learning instance is small on purpose (2 unicycles, ``random`` layout in a 1 m x 1 m
arena with one obstacle, 100-step episodes) so that it learns in well under a minute of
updates on a 2-core CPU; the safety filter is in the loop as in every training run.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from marl_robots.policies.evaluate import episode_runner
from marl_robots.policies.mappo import TrainConfig, Trainer, load_checkpoint, save_checkpoint

SMALL = dict(
    policy="gnn",
    robots=2,
    scenario="random",
    arena_m=(1.0, 1.0),
    max_obstacles=1,
    episode_length=100,
)
#: Deterministic success (fraction of robots at the goal after 100 steps) over 32 episodes.
UNTRAINED_SUCCESS_MAX = 0.25  # some random starts lie within 5 cm of their goal
TRAINED_SUCCESS_MIN = 0.5
LEARN_UPDATES = 20
EVAL_EPISODES = 32


def _config(zero_grad=False):
    return TrainConfig(**SMALL, num_envs=16, rollout_steps=64, lr=1e-3, zero_grad=zero_grad)


@pytest.fixture(scope="module")
def tiny():
    """The learning test's trainer and its one-update program (compiled once per module)."""
    trainer = Trainer(_config())
    return trainer, trainer.chunk(1)


@pytest.fixture(scope="module")
def success_of(tiny):
    """Deterministic success of actor params over ``EVAL_EPISODES`` 100-step episodes."""
    trainer, _ = tiny
    cfg = trainer.config
    run = episode_runner(cfg.env_config(), trainer.policy, EVAL_EPISODES, cfg.episode_length, 10.0)

    def success(actor):
        agg = jax.device_get(run(actor, jax.random.PRNGKey(7)))
        return float(agg["success_rate"].mean()), int(agg["collisions"].sum())

    return success


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_finite_gradients_and_params(tiny):
    trainer, step = tiny
    ts, log = step(trainer.init(0))
    grad_norm = float(np.asarray(log["grad_norm"])[0])
    assert np.isfinite(grad_norm) and grad_norm > 0
    for leaf in jax.tree_util.tree_leaves((ts.actor, ts.critic, log)):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_same_seed_same_params(tiny):
    trainer, step = tiny
    a, b, c = trainer.init(0), trainer.init(0), trainer.init(1)
    for _ in range(2):
        a, _ = step(a)
        b, _ = step(b)
        c, _ = step(c)
    assert _leaves_equal(a.actor, b.actor) and _leaves_equal(a.critic, b.critic)
    assert not _leaves_equal(a.actor, c.actor)


def test_checkpoint_resume_gives_the_same_next_update(tiny, tmp_path):
    trainer, step = tiny
    ts, _ = step(trainer.init(0))
    save_checkpoint(tmp_path, ts, trainer.config, {"seed": 0})
    restored, meta = load_checkpoint(tmp_path, trainer.init(5))
    assert meta["config"] == trainer.config.to_json()
    straight, _ = step(ts)
    resumed, _ = step(restored)
    assert _leaves_equal(straight, resumed)


def _learn(trainer, step, success_of):
    ts = trainer.init(0)
    before, _ = success_of(ts.actor)
    for _ in range(LEARN_UPDATES):
        ts, _ = step(ts)
    after, collisions = success_of(ts.actor)
    return before, after, collisions


def test_learning_lifts_success(tiny, success_of):
    before, after, collisions = _learn(*tiny, success_of)
    print(f"learning: success {before:.3f} -> {after:.3f} after {LEARN_UPDATES} updates")
    assert before <= UNTRAINED_SUCCESS_MAX, f"untrained success {before:.2f}"
    assert after >= TRAINED_SUCCESS_MIN, f"success {before:.2f} -> {after:.2f}"
    assert collisions == 0


def test_learning_fails_with_zeroed_gradient(success_of):
    trainer = Trainer(_config(zero_grad=True))
    before, after, _ = _learn(trainer, trainer.chunk(1), success_of)
    print(f"zeroed gradient: success {before:.3f} -> {after:.3f} after {LEARN_UPDATES} updates")
    # Observation statistics still move without gradients, so success drifts a little; the
    # learning test's threshold must then fail.
    assert after < TRAINED_SUCCESS_MIN, f"success {before:.2f} -> {after:.2f}"
