"""Closed-loop navigation: safety over 200+ episodes, liveness, and the unfiltered control case.

Episodes are batched with ``vmap`` per (scenario, robot count, robot model) so each group
compiles once.  Every episode draws its own per-robot class-K gains, so the deterministic
antipodal layout still yields distinct episodes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_robots.controllers.safety_filter import FilterConfig
from marl_robots.sim.closed_loop import SAFETY_DISTANCE_M, ControlConfig, cbf_params, rollout
from marl_robots.sim.run import DEFAULT_GAMMA, RunSpec, build
from marl_robots.sim.scenarios import SCENARIOS
from marl_robots.sim.tasks.navigation import NavigationConfig, NavigationTask

#: Allowed shortfall of the minimum separation below the safety distance [m].
SEPARATION_TOL_M = 1e-3
#: Allowed penetration of a body into an obstacle's surface [m].
CLEARANCE_TOL_M = 1e-3
SAFETY_STEPS = 600
EPISODES_PER_GROUP = 13
GROUPS = [
    (scenario, n, "single_integrator" if n in (4, 24) else "unicycle")
    for scenario in SCENARIOS.names()
    for n in (4, 12, 24, 32)
]
LIVENESS_MIN_SUCCESS = 0.95


def run_group(scenario, n, robot, episodes, steps, seed, filt=True, **nominal):
    task = NavigationTask(NavigationConfig(robots=n, scenario=scenario, robot=robot))
    params = task.default_params()
    dt = task.config.dt_s
    cfg = ControlConfig(filter=FilterConfig(dt_s=dt) if filt else None, **nominal)
    keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
    gains = jax.random.uniform(
        jax.random.PRNGKey(seed + 1), (episodes, n), minval=2.0, maxval=20.0
    )

    def episode(key, gamma):
        cbf = cbf_params(task, params, SAFETY_DISTANCE_M, gamma)
        state = task.reset(key, params)
        final, agg, _ = rollout(task, cfg, state, params, cbf, steps, record=False)
        return agg, task.metrics(final, params).at_goal

    return jax.jit(jax.vmap(episode))(keys, gains)


def test_safety_sweep_covers_at_least_200_episodes():
    assert len(GROUPS) * EPISODES_PER_GROUP >= 200


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS.names())
def test_no_collision_over_200_episodes_all_scenarios_4_to_32_robots(scenario):
    """One scenario's share of the 208-episode sweep (split per scenario so workers share it)."""
    total = 0
    report = []
    for group_scenario, n, robot in GROUPS:
        if group_scenario != scenario:
            continue
        agg, _ = run_group(scenario, n, robot, EPISODES_PER_GROUP, SAFETY_STEPS, seed=1000 + n)
        collisions = int(jnp.sum(jnp.triu(agg.collided, k=1)))
        min_sep = float(jnp.min(agg.min_separation_m))
        clearance = float(jnp.min(agg.min_obstacle_clearance_m))
        report.append(
            (scenario, n, robot, collisions, min_sep, clearance, int(jnp.sum(agg.infeasible)))
        )
        total += EPISODES_PER_GROUP
        assert collisions == 0, report[-1]
        assert min_sep >= SAFETY_DISTANCE_M - SEPARATION_TOL_M, report[-1]
        assert clearance >= -CLEARANCE_TOL_M, report[-1]
    assert total == EPISODES_PER_GROUP * 4
    print("\n".join(str(r) for r in report))


@pytest.mark.parametrize(
    "n,nominal",
    [(16, {"bias": 0.0, "make_way": 0.0}), (32, {})],
    ids=["plain-go-to-goal-16", "default-nominal-32"],
)
def test_without_filter_antipodal_collides(n, nominal):
    """The control case: the same loop without the filter collides, so the safety test can fail.

    The default nominal's right-hand bias and make-way terms avoid some contacts on their own
    (16 robots pass unfiltered), so the 16-robot case uses plain go-to-goal and the default
    nominal is shown colliding with 32 robots.
    """
    agg, _ = run_group("antipodal", n, "unicycle", 1, 1500, seed=0, filt=False, **nominal)
    assert int(jnp.sum(jnp.triu(agg.collided, k=1))) > 0
    assert float(agg.min_separation_m.min()) < 0.11


@pytest.mark.slow
@pytest.mark.parametrize("scenario,episodes", [("antipodal", 1), ("random", 8)])
def test_liveness_16_robots_reach_goals(scenario, episodes):
    """success_rate >= 0.95 within the 2000-step budget with default settings (no deadlock)."""
    spec = RunSpec(robots=16, scenario=scenario, steps=2000)
    task, cfg, params, cbf = build(spec)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(100, 100 + episodes)])
    states = jax.vmap(lambda k: task.reset(k, params))(keys)
    final, agg, _ = jax.jit(
        jax.vmap(lambda s: rollout(task, cfg, s, params, cbf, spec.steps, record=False))
    )(states)
    at_goal = np.asarray(jax.vmap(lambda s: task.metrics(s, params).at_goal)(final))
    success = at_goal.mean()
    assert success >= LIVENESS_MIN_SUCCESS, f"{scenario}: success {success:.3f}"
    assert int(jnp.sum(jnp.triu(agg.collided, k=1))) == 0
    assert cbf.gamma.shape == (16,) and float(cbf.gamma[0]) == DEFAULT_GAMMA
