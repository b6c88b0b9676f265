"""Safety at the largest team each scenario accepts, both robot models, both filter modes.

The layouts are checked against the filter's margins (``NavigationTask.check_layout``), so
these are the hardest teams a user can ask for; one size more is refused with the largest
size named.  Each episode draws its own per-robot class-K gains (2 to 20 /s).
"""

import jax
import jax.numpy as jnp
import pytest

from marl_robots.controllers.safety_filter import FilterConfig
from marl_robots.core.validate import ValidationError
from marl_robots.sim.closed_loop import SAFETY_DISTANCE_M, ControlConfig, cbf_params, rollout
from marl_robots.sim.tasks.navigation import NavigationConfig, NavigationTask

#: Allowed shortfall of the minimum separation below the safety distance [m].
SEPARATION_TOL_M = 1e-3
#: Allowed penetration of a body into an obstacle's surface [m].
CLEARANCE_TOL_M = 1e-3
#: The largest team each scenario accepts in the default arena (unicycle margins).
LARGEST = {"antipodal": 73, "corridor": 64, "crossing": 64, "random": 37}
ROBOT_MODELS = ("unicycle", "single_integrator")
#: Long enough for the crowd at the centre (antipodal robots meet after about 7 s).
STEPS = 450


def _task(scenario, n, robot):
    return NavigationTask(NavigationConfig(robots=n, scenario=scenario, robot=robot))


@pytest.mark.parametrize("scenario", sorted(LARGEST))
def test_largest_team_is_accepted_and_one_more_is_refused(scenario):
    n = LARGEST[scenario]
    for robot in ROBOT_MODELS:
        task = _task(scenario, n, robot)
        task.check_layout(jax.random.PRNGKey(0), task.default_params(), SAFETY_DISTANCE_M)
    task = _task(scenario, n + 1, "unicycle")
    with pytest.raises(ValidationError, match=f"largest unicycle team that fits is {n}$"):
        task.check_layout(jax.random.PRNGKey(0), task.default_params(), SAFETY_DISTANCE_M)


def _episodes(scenario, n, robot, mode, episodes, steps, seed):
    task = _task(scenario, n, robot)
    params = task.default_params()
    cfg = ControlConfig(filter=FilterConfig(mode=mode, dt_s=task.config.dt_s))
    keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
    gains = jax.random.uniform(jax.random.PRNGKey(seed + 1), (episodes, n), minval=2.0,
                               maxval=20.0)

    def episode(key, gamma):
        cbf = cbf_params(task, params, SAFETY_DISTANCE_M, gamma)
        return rollout(task, cfg, task.reset(key, params), params, cbf, steps, record=False)[1]

    return jax.jit(jax.vmap(episode))(keys, gains)


def _assert_safe(agg, label):
    collisions = int(jnp.sum(jnp.triu(agg.collided, k=1)))
    min_sep = float(jnp.min(agg.min_separation_m))
    clearance = float(jnp.min(agg.min_obstacle_clearance_m))
    assert collisions == 0, (label, collisions)
    assert min_sep >= SAFETY_DISTANCE_M - SEPARATION_TOL_M, (label, min_sep)
    assert clearance >= -CLEARANCE_TOL_M, (label, clearance)


@pytest.mark.slow
@pytest.mark.parametrize("robot", ROBOT_MODELS)
@pytest.mark.parametrize("scenario", sorted(LARGEST))
def test_largest_team_decentralised_no_collision(scenario, robot):
    agg = _episodes(scenario, LARGEST[scenario], robot, "decentralised", 2, STEPS, seed=7)
    _assert_safe(agg, (scenario, robot))


@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario,robot,steps",
    [("antipodal", "unicycle", 300), ("crossing", "single_integrator", 250)],
)
def test_largest_team_centralised_no_collision(scenario, robot, steps):
    """One QP over every pair of 73 (64) robots per step: costly, so one episode each."""
    agg = _episodes(scenario, LARGEST[scenario], robot, "centralised", 1, steps, seed=11)
    _assert_safe(agg, (scenario, robot, "centralised"))
