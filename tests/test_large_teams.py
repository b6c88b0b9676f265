"""Safety at the largest team each scenario accepts, both robot models, both filter modes.

The layouts are checked against the filter's margins (``NavigationTask.check_layout``), so
these are the hardest teams a user can ask for; one size more is refused with the largest
size named.  Each episode draws its own per-robot class-K gains (2 to 20 /s).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from marl_robots.controllers.safety_filter import FilterConfig
from marl_robots.core.validate import ValidationError
from marl_robots.sim.closed_loop import SAFETY_DISTANCE_M, ControlConfig, cbf_params, rollout
from marl_robots.sim.layout import check_ground_layout
from marl_robots.sim.tasks.navigation import NavigationConfig, NavigationTask, NavState

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
    [
        ("antipodal", "unicycle", 300),
        ("antipodal", "single_integrator", 250),
        ("crossing", "unicycle", 250),
        ("crossing", "single_integrator", 250),
        ("corridor", "unicycle", 250),
        ("corridor", "single_integrator", 250),
        ("random", "unicycle", 250),
        ("random", "single_integrator", 250),
    ],
)
def test_largest_team_centralised_no_collision(scenario, robot, steps):
    """One QP over every pair of up to 73 robots per step: costly, so one short episode each.

    250 steps (8 s) cover the first crowd: antipodal robots meet at the centre after ~7 s,
    crossing groups meet after ~4 s, corridor groups reach the gap after ~5 s.
    """
    agg = _episodes(scenario, LARGEST[scenario], robot, "centralised", 1, steps, seed=11)
    _assert_safe(agg, (scenario, robot, "centralised"))


_COMPILED = {}


def _episode_fn(robot, mode, n):
    """One compiled closed-loop episode per (robot, mode, n), reused by every example."""
    if (robot, mode, n) not in _COMPILED:
        task = _task("random", n, robot)
        params = task.default_params()
        cfg = ControlConfig(filter=FilterConfig(mode=mode, dt_s=task.config.dt_s))

        def episode(state, gamma):
            cbf = cbf_params(task, params, SAFETY_DISTANCE_M, gamma)
            return rollout(task, cfg, state, params, cbf, HYPO_STEPS, record=False)[1]

        _COMPILED[robot, mode, n] = (task, params, jax.jit(episode))
    return _COMPILED[robot, mode, n]


HYPO_ROBOTS, HYPO_STEPS = 6, 400
#: 10 x 6 cells 0.3 m apart (jittered by up to 4 cm: always >= 0.22 m between robots).
_CELLS = np.stack(np.meshgrid(-1.35 + 0.3 * np.arange(10), -0.75 + 0.3 * np.arange(6)), -1)
_CELLS = _CELLS.reshape(-1, 2).astype(np.float32)
_cells = st.lists(st.integers(0, len(_CELLS) - 1), min_size=HYPO_ROBOTS, max_size=HYPO_ROBOTS,
                  unique=True)
_jitter = st.lists(st.tuples(st.floats(-0.04, 0.04), st.floats(-0.04, 0.04)),
                   min_size=HYPO_ROBOTS, max_size=HYPO_ROBOTS)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["decentralised", "centralised"])
@pytest.mark.parametrize("robot", ROBOT_MODELS)
@settings(max_examples=8, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    start_cells=_cells,
    goal_cells=_cells,
    jitter=_jitter,
    obstacles=st.lists(st.tuples(st.floats(-1.2, 1.2), st.floats(-0.7, 0.7),
                                 st.floats(0.05, 0.2)), max_size=1),
    yaw=st.floats(-3.1, 3.1),
    gamma=st.floats(2.0, 20.0),
)
def test_hypothesis_layouts_no_collision(
    robot, mode, start_cells, goal_cells, jitter, obstacles, yaw, gamma
):
    """Any layout the check accepts (hypothesis-generated) stays collision-free."""
    task, params, episode = _episode_fn(robot, mode, HYPO_ROBOTS)
    pts = _CELLS[start_cells] + np.array(jitter, np.float32)
    goal = _CELLS[goal_cells]
    yaws = np.full(HYPO_ROBOTS, yaw, np.float32)
    offset = task.robot.control_point(pts, yaws, params, np) - pts
    obs = np.array(obstacles, np.float32).reshape(-1, 3)
    try:
        check_ground_layout(robot, params, pts - offset, yaws, goal, obs,
                            task.config.arena_bounds, SAFETY_DISTANCE_M)
    except ValidationError:
        assume(False)
    padded = np.zeros((task.config.max_obstacles, 3), np.float32)
    padded[: len(obs)] = obs
    state = NavState(jnp.asarray(pts - offset), jnp.asarray(yaws), jnp.asarray(goal),
                     jnp.asarray(padded), jnp.arange(task.config.max_obstacles) < len(obs),
                     jnp.int32(0), jnp.full((HYPO_ROBOTS,), -1, jnp.int32))
    agg = episode(state, jnp.full((HYPO_ROBOTS,), gamma, jnp.float32))
    _assert_safe(agg, (robot, mode))


@pytest.mark.slow
@pytest.mark.parametrize("robot", ROBOT_MODELS)
@pytest.mark.parametrize("scenario", sorted(LARGEST))
def test_centralised_every_scenario_16_robots_no_collision(scenario, robot):
    """The centralised mode on every scenario and model (16 robots, 2 episodes, random gains)."""
    agg = _episodes(scenario, 16, robot, "centralised", 2, STEPS, seed=13)
    _assert_safe(agg, (scenario, robot, "centralised-16"))
