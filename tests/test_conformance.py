"""Conformance of every registered robot, scenario and task: add by registering, test by iterating.

Each test is parametrised over the names in ``ROBOTS``, ``SCENARIOS`` and ``TASKS``, so a new
entry is held to the same contract the moment it is registered.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from marl_robots.sim.robots import ROBOTS
from marl_robots.sim.robots.family import LEVELS, ROBOT_FAMILIES, GroundState, RobotFamily
from marl_robots.sim.robots.ground import GroundParams, default_params
from marl_robots.sim.scenarios import MIN_SPACING_M, SCENARIOS
from marl_robots.sim.tasks import TASKS
from marl_robots.sim.tasks.navigation import NavigationConfig, NavState

ROBOT_NAMES = ROBOTS.names()
SCENARIO_NAMES = SCENARIOS.names()
TASK_NAMES = TASKS.names()

#: Control period used by the robot tests [s] (the Robotarium's).
DT_S = 0.033
#: Period small enough that a finite difference is the instantaneous velocity [s].
SMALL_DT_S = 1e-6
#: Finite-difference velocity error allowed at SMALL_DT_S in float64 [m/s].
FD_VEL_ATOL = 1e-5
#: float32 agreement between the JAX and NumPy paths of the same function [m, rad].
F32_ATOL = 1e-5
#: Displacement of one float32 step vs the same step in float64 [m] (steps are ~7 mm).
F32_STEP_ATOL_M = 1e-6
#: Exact arc vs 200 000-substep Euler integration over one long step [m, rad].
EULER_ATOL = 1e-5
#: Round trip of the point-velocity maps in float64 [m/s].
MAP_ATOL = 1e-9
#: Arena of the default navigation config (width x, height y) [m], centred at the origin.
ARENA_M = (3.2, 2.0)
#: Smallest clearance of any start or goal from the arena walls and obstacle edges [m].
LAYOUT_MARGIN_M = 0.1
#: Float tolerance on layout distances [m].
LAYOUT_ATOL_M = 1e-5
SCENARIO_N = (4, 5, 16, 32)
SCENARIO_KEYS = (0, 1, 7)
MAX_OBSTACLES = 4


def _params64() -> GroundParams:
    return GroundParams(*(np.float64(v) for v in GroundParams()))


def _rotate(u_body, yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack(
        [c * u_body[..., 0] - s * u_body[..., 1], s * u_body[..., 0] + c * u_body[..., 1]], axis=-1
    )


def _to_body(u, yaw):
    return _rotate(u, -yaw)


def _feasible_point_velocity(robot, yaw, params, rng, fraction=0.9):
    """Random control-point velocities [n, 2] strictly inside ``robot.limits``."""
    lim = robot.limits(yaw, params, np)
    u_body = rng.uniform(-1.0, 1.0, size=yaw.shape + (2,)) * fraction * lim.half_width
    u = _rotate(u_body, lim.yaw)
    speed = np.linalg.norm(u, axis=-1)
    scale = np.minimum(1.0, fraction * lim.speed_max / np.maximum(speed, 1e-12))
    return u * scale[:, None]


def _point_velocity_of_step(robot, pos, yaw, action, params, dt):
    """Finite-difference velocity [n, 2] of the control point over one step of ``dt``."""
    p0 = robot.control_point(pos, yaw, params, np)
    pos1, yaw1 = robot.step(pos, yaw, action, params, dt, np)
    return (robot.control_point(pos1, yaw1, params, np) - p0) / dt


# ============================================================================ robots


@pytest.fixture(params=ROBOT_NAMES)
def robot(request):
    return ROBOTS.get(request.param)


def _random_robot_inputs(n, rng, action_scale=0.5):
    pos = rng.uniform(-1.0, 1.0, size=(n, 2))
    yaw = rng.uniform(-np.pi, np.pi, size=n)
    action = rng.normal(scale=action_scale, size=(n, 2))
    return pos, yaw, action


def test_robot_declares_interface(robot):
    assert robot.action_dim == 2
    assert ROBOTS.get(robot.name) is robot, "the class's name is its registry name"


def test_robot_step_jit_vmap_shapes_finite_and_matches_numpy(robot):
    rng = np.random.default_rng(1)
    batch, n = 3, 5
    pos = rng.uniform(-1, 1, size=(batch, n, 2)).astype(np.float32)
    yaw = rng.uniform(-np.pi, np.pi, size=(batch, n)).astype(np.float32)
    action = rng.normal(scale=1.0, size=(batch, n, 2)).astype(np.float32)
    params = default_params()
    fn = jax.jit(jax.vmap(lambda p, y, a: robot.step(p, y, a, params, DT_S, jnp)))
    new_pos, new_yaw = fn(pos, yaw, action)
    assert new_pos.shape == (batch, n, 2) and new_yaw.shape == (batch, n)
    assert new_pos.dtype == jnp.float32 and new_yaw.dtype == jnp.float32
    assert np.all(np.isfinite(new_pos)) and np.all(np.isfinite(new_yaw))
    assert np.all(np.abs(np.asarray(new_yaw)) <= np.pi + F32_ATOL)
    again = fn(pos, yaw, action)
    assert_array_equal(np.asarray(again[0]), np.asarray(new_pos))
    assert_array_equal(np.asarray(again[1]), np.asarray(new_yaw))
    p32 = GroundParams(*(np.float32(v) for v in GroundParams()))
    for b in range(batch):
        ref_pos, ref_yaw = robot.step(pos[b], yaw[b], action[b], p32, DT_S, np)
        assert_allclose(np.asarray(new_pos[b]), ref_pos, atol=F32_ATOL)
        dyaw = np.angle(np.exp(1j * (np.asarray(new_yaw[b], np.float64) - ref_yaw)))
        assert_allclose(dyaw, 0.0, atol=F32_ATOL)


def test_robot_step_vmaps_over_params(robot):
    """Domain randomisation: vmap over GroundParams with different top speeds."""
    n = 4
    v_max = jnp.array([0.1, 0.2, 0.3], jnp.float32)
    params = jax.vmap(lambda v: default_params()._replace(v_max=v))(v_max)
    yaw = jnp.linspace(-2.0, 2.0, n, dtype=jnp.float32)
    pos = jnp.zeros((n, 2), jnp.float32)
    heading = jnp.stack([jnp.cos(yaw), jnp.sin(yaw)], -1)

    def one(p):
        # Ten times the top speed straight ahead: both models move the centre at v_max.
        action = robot.from_point_velocity(10.0 * heading, yaw, p, jnp)
        return robot.step(pos, yaw, action, p, DT_S, jnp)

    new_pos, _ = jax.jit(jax.vmap(one))(params)
    moved = np.linalg.norm(np.asarray(new_pos), axis=-1) / DT_S
    assert_allclose(moved, np.repeat(np.asarray(v_max)[:, None], n, 1), atol=1e-4)


def test_robot_point_velocity_maps_are_inverse(robot):
    rng = np.random.default_rng(2)
    params = _params64()
    _, yaw, action = _random_robot_inputs(50, rng)
    u = rng.normal(scale=0.3, size=(50, 2))
    assert_allclose(
        robot.to_point_velocity(robot.from_point_velocity(u, yaw, params), yaw, params),
        u,
        atol=MAP_ATOL,
    )
    u_of_action = robot.to_point_velocity(action, yaw, params)
    assert_allclose(robot.from_point_velocity(u_of_action, yaw, params), action, atol=MAP_ATOL)


def test_robot_control_point_moves_with_point_velocity(robot):
    """For a small dt the control point moves by ``to_point_velocity(action) * dt``."""
    rng = np.random.default_rng(3)
    params = _params64()
    pos, yaw, _ = _random_robot_inputs(64, rng)
    u = _feasible_point_velocity(robot, yaw, params, rng)
    action = robot.from_point_velocity(u, yaw, params)
    vel = _point_velocity_of_step(robot, pos, yaw, action, params, SMALL_DT_S)
    assert_allclose(vel, robot.to_point_velocity(action, yaw, params), atol=FD_VEL_ATOL)
    assert_allclose(vel, u, atol=FD_VEL_ATOL)


def test_robot_limits_shapes(robot):
    n = 7
    yaw = np.linspace(-3.0, 3.0, n)
    lim = robot.limits(yaw, _params64(), np)
    assert lim.half_width.shape == (n, 2)
    assert lim.yaw.shape == (n,) and lim.speed_max.shape == (n,)
    assert np.all(lim.half_width > 0) and np.all(lim.speed_max > 0)
    lim_j = robot.limits(jnp.asarray(yaw, jnp.float32), default_params(), jnp)
    assert lim_j.half_width.shape == (n, 2) and lim_j.speed_max.shape == (n,)


@pytest.mark.parametrize("action_scale", [0.5, 5.0, 50.0])
def test_robot_step_respects_its_limits(robot, action_scale):
    """Whatever the action, the control point's velocity lies inside ``limits()``."""
    rng = np.random.default_rng(4)
    params = _params64()
    pos, yaw, action = _random_robot_inputs(200, rng, action_scale)
    vel = _point_velocity_of_step(robot, pos, yaw, action, params, SMALL_DT_S)
    lim = robot.limits(yaw, params, np)
    body = _to_body(vel, lim.yaw)
    assert np.all(np.abs(body) <= lim.half_width + FD_VEL_ATOL)
    assert np.all(np.linalg.norm(vel, axis=-1) <= lim.speed_max + FD_VEL_ATOL)


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_robot_step_float32_matches_float64(robot, xp):
    """A float32 step moves robots as far as a float64 one, slight turns included."""
    rng = np.random.default_rng(5)
    n = 400
    pos, yaw, action = _random_robot_inputs(n, rng, action_scale=0.3)
    # Components from 1e-8 to 1: near-zero turn rates are where an arc formula can cancel.
    action = action * 10.0 ** rng.uniform(-8.0, 0.0, size=(n, 2))
    pos32, yaw32, action32 = (a.astype(np.float32) for a in (pos, yaw, action))
    p32 = GroundParams(*(np.float32(v) for v in GroundParams()))
    new32, _ = robot.step(
        xp.asarray(pos32), xp.asarray(yaw32), xp.asarray(action32), p32, DT_S, xp
    )
    start = pos32.astype(np.float64)
    new64, _ = robot.step(
        start, yaw32.astype(np.float64), action32.astype(np.float64), _params64(), DT_S, np
    )
    assert_allclose(np.asarray(new32, np.float64) - start, new64 - start, atol=F32_STEP_ATOL_M)


def test_unicycle_clips_v_and_omega():
    uni = ROBOTS.get("unicycle")
    p = _params64()
    pos = np.array([[0.1, -0.2], [0.0, 0.0], [0.3, 0.3]])
    yaw = np.array([0.3, -1.0, 2.5])
    big = np.array([[1.0, 10.0], [-3.0, -50.0], [0.5, -4.0]])
    capped = np.array([[p.v_max, p.omega_max], [-p.v_max, -p.omega_max], [p.v_max, -p.omega_max]])
    got = uni.step(pos, yaw, big, p, DT_S)
    ref = uni.step(pos, yaw, capped, p, DT_S)
    assert_allclose(got[0], ref[0], atol=MAP_ATOL)
    assert_allclose(got[1], ref[1], atol=MAP_ATOL)
    assert_allclose(got[1], wrap(yaw + capped[:, 1] * DT_S), atol=MAP_ATOL)


def wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def test_single_integrator_caps_speed_keeps_direction():
    si = ROBOTS.get("single_integrator")
    p = _params64()
    pos = np.zeros((3, 2))
    yaw = np.zeros(3)
    action = np.array([[3.0, 4.0], [0.05, 0.0], [0.0, -0.2]])
    new_pos, new_yaw = si.step(pos, yaw, action, p, DT_S)
    vel = new_pos / DT_S
    assert_allclose(vel[0], p.v_max * np.array([0.6, 0.8]), atol=MAP_ATOL)
    assert_allclose(vel[1:], action[1:], atol=MAP_ATOL)
    assert_allclose(new_yaw, [np.arctan2(4, 3), 0.0, -np.pi / 2], atol=MAP_ATOL)


def _euler_unicycle(pos, yaw, v, w, dt, substeps):
    h = dt / substeps
    x, y, th = pos[:, 0].copy(), pos[:, 1].copy(), yaw.copy()
    for _ in range(substeps):
        x += h * v * np.cos(th)
        y += h * v * np.sin(th)
        th += h * w
    return np.stack([x, y], -1), th


def test_unicycle_exact_arc_matches_fine_euler():
    uni = ROBOTS.get("unicycle")
    p = _params64()
    pos = np.array([[0.0, 0.0], [0.5, -0.3], [-0.2, 0.4], [1.0, 1.0], [0.0, 0.0]])
    yaw = np.array([0.0, 1.0, -2.0, 3.1, 0.7])
    # Sharp turn, gentle turn, reverse, near-straight (the small-turn branch), on the spot.
    v = np.array([0.2, 0.15, -0.1, 0.2, 0.0])
    w = np.array([3.6, -0.5, 2.0, 1e-9, -3.0])
    dt = 0.5
    new_pos, new_yaw = uni.step(pos, yaw, np.stack([v, w], -1), p, dt)
    ref_pos, ref_yaw = _euler_unicycle(pos, yaw, v, w, dt, 200_000)
    assert_allclose(new_pos, ref_pos, atol=EULER_ATOL)
    assert_allclose(np.angle(np.exp(1j * (new_yaw - ref_yaw))), 0.0, atol=EULER_ATOL)
    assert np.all((new_yaw >= -np.pi) & (new_yaw < np.pi))


# ============================================================================ scenarios


@functools.cache
def _jitted_scenario(name):
    """One jitted layout function per scenario (compiled once per n across tests)."""
    return jax.jit(SCENARIOS.get(name), static_argnums=(1, 2, 3))


def _layout_cases():
    return list(itertools.product(SCENARIO_NAMES, SCENARIO_N))


def _min_pair_distance(points):
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    d[np.arange(len(points)), np.arange(len(points))] = np.inf
    return d.min()


@pytest.mark.parametrize(("name", "n"), _layout_cases())
def test_scenario_layout_contract(name, n):
    jitted = _jitted_scenario(name)
    half = np.array(ARENA_M) / 2.0
    for seed in SCENARIO_KEYS:
        key = jax.random.PRNGKey(seed)
        layout = jitted(key, n, ARENA_M, MAX_OBSTACLES)
        again = jitted(jax.random.PRNGKey(seed), n, ARENA_M, MAX_OBSTACLES)
        for a, b in zip(layout, again, strict=True):
            assert_array_equal(np.asarray(a), np.asarray(b))
        pos, yaw, goal = (np.asarray(a, np.float64) for a in layout[:3])
        obstacles, mask = np.asarray(layout.obstacles), np.asarray(layout.obstacle_mask)
        assert pos.shape == goal.shape == (n, 2) and yaw.shape == (n,)
        assert obstacles.shape == (MAX_OBSTACLES, 3) and mask.shape == (MAX_OBSTACLES,)
        assert mask.dtype == bool
        for pts in (pos, goal):
            assert np.all(np.isfinite(pts))
            assert np.all(np.abs(pts) <= half - LAYOUT_MARGIN_M + LAYOUT_ATOL_M), (
                f"{name} n={n}: a start or goal is within {LAYOUT_MARGIN_M} m of a wall"
            )
            assert _min_pair_distance(pts) >= MIN_SPACING_M - LAYOUT_ATOL_M
            if mask.any():
                obs = obstacles[mask]
                d = np.linalg.norm(pts[:, None] - obs[None, :, :2], axis=-1)
                assert np.all(d >= obs[None, :, 2] + LAYOUT_MARGIN_M - LAYOUT_ATOL_M)
        # Headings face the goal.
        to_goal = goal - pos
        moving = np.linalg.norm(to_goal, axis=-1) > 1e-6
        face = np.arctan2(to_goal[:, 1], to_goal[:, 0])
        assert_allclose(np.angle(np.exp(1j * (yaw - face)))[moving], 0.0, atol=1e-5)
        # Obstacle slots: real ones have a positive radius inside the arena, padding is zero.
        assert np.all(obstacles[mask, 2] > 0)
        assert np.all(np.abs(obstacles[mask, :2]) < half)
        assert np.all(obstacles[~mask] == 0)


def test_random_scenario_depends_on_key():
    fn = _jitted_scenario("random")
    a = fn(jax.random.PRNGKey(0), 16, ARENA_M, MAX_OBSTACLES)
    b = fn(jax.random.PRNGKey(1), 16, ARENA_M, MAX_OBSTACLES)
    assert not np.allclose(np.asarray(a.pos), np.asarray(b.pos))


def test_scenario_obstacle_budget_too_small_fails_clearly():
    with pytest.raises(ValueError, match="max_obstacles=1"):
        SCENARIOS.get("corridor")(jax.random.PRNGKey(0), 4, ARENA_M, 1)


# ============================================================================ tasks

#: How to build each registered task's config for a robot model and scenario.  A task that is
#: registered without an entry here fails ``test_every_task_has_a_conformance_config``.
TASK_CONFIGS = {
    "navigation": lambda robot, scenario, n: NavigationConfig(
        robots=n, scenario=scenario, robot=robot, max_obstacles=MAX_OBSTACLES
    ),
}
TASK_N = 5
ENVS = 3


def test_every_task_has_a_conformance_config():
    assert set(TASK_NAMES) <= set(TASK_CONFIGS), "add a config factory for the new task"


def _task(task_name, robot_name, scenario_name, n=TASK_N):
    return TASKS.get(task_name)(TASK_CONFIGS[task_name](robot_name, scenario_name, n))


def _batched_params(task):
    v_max = jnp.array([0.1, 0.2, 0.3], jnp.float32)
    return jax.vmap(lambda v: task.default_params()._replace(v_max=v))(v_max)


@pytest.mark.parametrize("task_name", TASK_NAMES)
@pytest.mark.parametrize("scenario_name", SCENARIO_NAMES)
@pytest.mark.parametrize("robot_name", ROBOT_NAMES)
def test_task_reset_step_jit_vmap(task_name, robot_name, scenario_name):
    task = _task(task_name, robot_name, scenario_name)
    n = task.n
    params = _batched_params(task)
    keys = jax.random.split(jax.random.PRNGKey(0), ENVS)
    reset = jax.jit(jax.vmap(task.reset))
    state = reset(keys, params)
    assert state.pos.shape == (ENVS, n, 2) and state.yaw.shape == (ENVS, n)
    assert state.goal.shape == (ENVS, n, 2)
    assert state.t.shape == (ENVS,) and np.all(np.asarray(state.t) == 0)
    assert np.all(np.asarray(state.reached_step) == -1)
    for a, b in zip(state, reset(keys, params), strict=True):
        assert_array_equal(np.asarray(a), np.asarray(b))
    # Control points start on the scenario's starts; goals are the scenario's goals.
    layout = _jitted_scenario(scenario_name)(keys[1], n, task.config.arena_m, MAX_OBSTACLES)
    one = jax.tree.map(lambda x: x[1], state)
    p1 = jax.tree.map(lambda x: x[1], params)
    assert_allclose(
        np.asarray(task.control_points(one, p1)), np.asarray(layout.pos), atol=F32_ATOL
    )
    assert_allclose(np.asarray(one.goal), np.asarray(layout.goal), atol=F32_ATOL)

    # One step, the robots' full speed straight ahead, different v_max per environment.
    heading = jnp.stack([jnp.cos(state.yaw), jnp.sin(state.yaw)], -1)
    action = jax.vmap(lambda u, y, p: task.robot.from_point_velocity(u, y, p, jnp))(
        10.0 * heading, state.yaw, params
    )
    step = jax.jit(jax.vmap(task.step, in_axes=(0, 0, 0)))
    nxt, metrics = step(state, action, params)
    nxt2, metrics2 = step(state, action, params)
    leaves = jax.tree.leaves((nxt, metrics)), jax.tree.leaves((nxt2, metrics2))
    for a, b in zip(*leaves, strict=True):
        assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.all(np.asarray(nxt.t) == 1)
    moved = np.linalg.norm(np.asarray(nxt.pos - state.pos), axis=-1) / task.config.dt_s
    assert_allclose(moved, np.repeat(np.asarray(params.v_max)[:, None], n, 1), atol=1e-4)
    assert metrics.min_separation_m.shape == (ENVS,)
    assert metrics.colliding_pairs.shape == (ENVS,)
    assert metrics.at_goal.shape == (ENVS, n) and metrics.at_goal.dtype == bool
    assert metrics.obstacle_clearance_m.shape == (ENVS,)
    ref = jax.vmap(task.metrics)(nxt, params)
    for a, b in zip(metrics, ref, strict=True):
        assert_allclose(np.asarray(a), np.asarray(b), atol=F32_ATOL)
    assert np.all(np.asarray(metrics.min_separation_m) > 0.2), "a spaced layout, one step on"
    assert np.all(np.asarray(metrics.colliding_pairs) == 0)
    nxt3, _ = step(nxt, action, params)
    assert np.all(np.asarray(nxt3.t) == 2)


def _hand_state(task, pos, yaw, goal):
    o = task.config.max_obstacles
    return NavState(
        pos=jnp.asarray(pos, jnp.float32),
        yaw=jnp.asarray(yaw, jnp.float32),
        goal=jnp.asarray(goal, jnp.float32),
        obstacles=jnp.zeros((o, 3), jnp.float32),
        obstacle_mask=jnp.zeros((o,), bool),
        t=jnp.int32(0),
        reached_step=jnp.full((pos.shape[0],), -1, jnp.int32),
    )


@pytest.mark.parametrize("robot_name", ROBOT_NAMES)
def test_navigation_reached_step_records_first_arrival(robot_name):
    task = _task("navigation", robot_name, "antipodal", n=3)
    params = task.default_params()
    pos = np.array([[0.0, 0.0], [0.5, 0.0], [-0.5, 0.5]], np.float32)
    yaw = np.zeros(3, np.float32)
    state = _hand_state(task, pos, yaw, np.zeros((3, 2)))
    points = np.asarray(task.control_points(state, params))
    tol = task.config.goal_tolerance_m
    # Robot 0 sits on its goal, robot 1 just inside the tolerance, robot 2 far away.
    goal = points + np.array([[0.0, 0.0], [0.0, 0.8 * tol], [1.0, 0.1]], np.float32)
    state = state._replace(goal=jnp.asarray(goal))
    zero = jnp.zeros((3, 2), jnp.float32)
    step = jax.jit(task.step)
    s1, m1 = step(state, zero, params)
    assert np.asarray(m1.at_goal).tolist() == [True, True, False]
    assert np.asarray(s1.reached_step).tolist() == [1, 1, -1]
    # Moving everyone's goal away does not erase the first arrival.
    s1 = s1._replace(
        goal=jnp.asarray(goal + np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32))
    )
    s2, m2 = step(s1, zero, params)
    assert np.asarray(m2.at_goal).tolist() == [False, False, False]
    assert np.asarray(s2.reached_step).tolist() == [1, 1, -1]
    # Everyone back on their goals at t=3: only robot 2's first arrival is new.
    s2 = s2._replace(goal=jnp.asarray(points))
    s3, _ = step(s2, zero, params)
    assert np.asarray(s3.reached_step).tolist() == [1, 1, 3]
    assert int(s3.t) == 3


@pytest.mark.parametrize("robot_name", ROBOT_NAMES)
def test_navigation_metrics_collisions_and_clearance(robot_name):
    task = _task("navigation", robot_name, "antipodal", n=3)
    params = task.default_params()
    pos = np.array([[0.0, 0.0], [0.05, 0.0], [1.0, 0.0]], np.float32)
    state = _hand_state(task, pos, np.zeros(3), np.zeros((3, 2)))
    state = state._replace(
        obstacles=state.obstacles.at[0].set(jnp.array([1.0, 0.5, 0.2])),
        obstacle_mask=state.obstacle_mask.at[0].set(True),
    )
    metrics = jax.jit(task.metrics)
    m = metrics(state, params)
    assert_allclose(float(m.min_separation_m), 0.05, atol=F32_ATOL)
    assert int(m.colliding_pairs) == 1
    # Robot 2 is 0.5 m from the obstacle centre: 0.5 - 0.2 - 0.055 of surface clearance.
    assert_allclose(float(m.obstacle_clearance_m), 0.5 - 0.2 - 0.5 * 0.11, atol=F32_ATOL)
    no_obs = metrics(state._replace(obstacle_mask=jnp.zeros_like(state.obstacle_mask)), params)
    assert np.isinf(float(no_obs.obstacle_clearance_m))


def test_navigation_config_rejects_unknown_names():
    with pytest.raises(KeyError, match="known scenarios: " + ", ".join(SCENARIO_NAMES)):
        NavigationConfig(scenario="antipodl")
    with pytest.raises(KeyError, match="known robots: " + ", ".join(ROBOT_NAMES)):
        NavigationConfig(robot="unicylce")


# ============================================================== robot families (any dimension)

FAMILY_NAMES = ROBOT_FAMILIES.names()


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_robot_family_protocol(name, xp):
    """Shapes, levels, limits as half-spaces, and a command realised by ``to_action`` moves the
    filter point the way the level says (velocity: displacement; acceleration: velocity)."""
    fam = ROBOT_FAMILIES.get(name)(xp)
    assert isinstance(fam, RobotFamily) and fam.name == name and fam.level in LEVELS
    params = fam.default_params()
    n, d = 3, fam.dim
    dtype = np.float64 if xp is np else np.float32
    pos = xp.asarray(np.arange(n * d).reshape(n, d) * 0.5 + 1.0, dtype)
    state = fam.init(pos, params)
    assert fam.positions(state).shape == (n, d) and fam.filter_point(state, params).shape == (n, d)
    A, b = fam.limits(state, params)
    assert A.shape[:1] == (n,) and A.shape[-1] == fam.command_dim == d and b.shape == A.shape[:2]
    command = xp.asarray(np.tile([0.05, -0.04, 0.03][:d], (n, 1)), dtype)
    assert np.all(np.einsum("nrd,nd->nr", np.asarray(A), np.asarray(command)) <= np.asarray(b))
    dt = 0.002 if fam.level == "acceleration" else DT_S
    steps = 200 if fam.level == "acceleration" else 1
    p0 = np.asarray(fam.filter_point(state, params), np.float64)

    def advance(state):
        action, state = fam.to_action(state, command, params, dt)
        return fam.step(state, action, params, dt)

    advance = jax.jit(advance) if xp is jnp else advance
    for _ in range(steps):
        state = advance(state)
    moved = np.asarray(fam.filter_point(state, params), np.float64) - p0
    if fam.level == "velocity":
        assert_allclose(moved, np.asarray(command) * DT_S, atol=1e-4)  # arc vs chord
    else:  # 0.4 s of constant commanded acceleration: the velocity follows, ~80 ms behind
        ratio = np.asarray(state.quad.vel, np.float64) / (np.asarray(command) * steps * dt)
        assert np.all((ratio > 0.7) & (ratio < 1.01)), ratio


@pytest.mark.parametrize("name", ROBOT_NAMES)
def test_ground_family_step_is_the_model_step(name):
    """Moving the ground robots onto the protocol changes nothing: the same arrays, bit for bit."""
    model = ROBOTS.get(name)
    fam = ROBOT_FAMILIES.get(name)(jnp)
    params = default_params()
    rng = np.random.default_rng(0)
    pos = jnp.asarray(rng.uniform(-1, 1, (4, 2)), jnp.float32)
    yaw = jnp.asarray(rng.uniform(-3, 3, 4), jnp.float32)
    action = jnp.asarray(rng.uniform(-0.3, 0.3, (4, 2)), jnp.float32)
    ref = model.step(pos, yaw, action, params, DT_S, jnp)
    got = fam.step(GroundState(pos, yaw), action, params, DT_S)
    assert_array_equal(np.asarray(got.pos), np.asarray(ref[0]))
    assert_array_equal(np.asarray(got.yaw), np.asarray(ref[1]))
