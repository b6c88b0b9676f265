"""Recovery from starts placed inside the filter's margins by hand (both models, both modes).

Robots start with their filter points closer than the pair distance (bodies not touching).
The relaxation lets only those violated rows give, and never past "no deeper", so:
separation never drops below its starting value (or the safety distance, whichever is
smaller), no body ever touches another, and the team recovers every margin (filter points
at least the pair distance apart).
``test_recovery_fails_when_relaxation_brakes`` shows the recovery assertion can fail.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from marl_robots.controllers import safety_filter
from marl_robots.controllers.safety_filter import FilterConfig, FilterStatus
from marl_robots.sim.closed_loop import SAFETY_DISTANCE_M, ControlConfig, cbf_params, rollout
from marl_robots.sim.tasks.navigation import NavigationConfig, NavigationTask, NavState

#: Allowed shortfall below the starting separation (or the safety distance) [m].
SEPARATION_TOL_M = 1e-3
BODY_M = 0.11
ROBOTS, EPISODES, STEPS = 6, 16, 300
LOOKAHEAD_M = {"unicycle": 0.04, "single_integrator": 0.0}


def _layouts(robot, seed):
    """Starts inside the margin: filter points 0.12 m or more apart, bodies >= 0.115 m."""
    rng = np.random.default_rng(seed)
    lk = LOOKAHEAD_M[robot]
    axles, yaws, goals = [], [], []
    while len(axles) < EPISODES:
        pts, ys = [], []
        while len(pts) < ROBOTS:
            p, y = rng.uniform(-0.3, 0.3, 2), rng.uniform(-np.pi, np.pi)
            c = p - lk * np.array([np.cos(y), np.sin(y)])
            if all(
                np.linalg.norm(p - q) >= 0.12
                and np.linalg.norm(c - (q - lk * np.array([np.cos(yq), np.sin(yq)]))) >= 0.115
                for q, yq in zip(pts, ys)
            ):
                pts.append(p)
                ys.append(y)
        pts, ys = np.array(pts), np.array(ys)
        axles.append(pts - lk * np.stack([np.cos(ys), np.sin(ys)], -1))
        yaws.append(ys)
        goals.append(-1.5 * np.roll(pts, 3, axis=0))
    return tuple(jnp.asarray(np.array(a), jnp.float32) for a in (axles, yaws, goals))


def _run(robot, mode, seed=0):
    task = NavigationTask(NavigationConfig(robots=ROBOTS, scenario="random", robot=robot))
    params = task.default_params()
    cfg = ControlConfig(filter=FilterConfig(mode=mode, dt_s=task.config.dt_s))
    cbf = cbf_params(task, params, SAFETY_DISTANCE_M, 10.0)
    axles, yaws, goals = _layouts(robot, seed)

    def episode(pos, yaw, goal):
        state = NavState(pos, yaw, goal, jnp.zeros((4, 3)), jnp.zeros(4, bool), jnp.int32(0),
                         jnp.full((ROBOTS,), -1, jnp.int32))
        final, agg, traj = rollout(task, cfg, state, params, cbf, STEPS, record=True)
        pts = task.control_points(final, params)
        diff = pts[:, None] - pts[None]
        gap = jnp.sqrt(jnp.sum(diff * diff, -1)) - cbf.safety_distance
        gap = jnp.min(jnp.where(jnp.eye(ROBOTS, dtype=bool), jnp.inf, gap))
        relaxed = jnp.sum(traj.status == FilterStatus.RELAXED)
        return traj.min_separation_m, relaxed, agg.collided, gap

    sep, relaxed, collided, gap = jax.jit(jax.vmap(episode))(axles, yaws, goals)
    d0 = np.sqrt(np.sum((np.asarray(axles)[:, :, None] - np.asarray(axles)[:, None]) ** 2, -1))
    d0 = np.where(np.eye(ROBOTS, dtype=bool), np.inf, d0).min(axis=(1, 2))
    return np.asarray(sep), np.asarray(relaxed), np.asarray(collided), d0, np.asarray(gap)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["decentralised", "centralised"])
@pytest.mark.parametrize("robot", ["unicycle", "single_integrator"])
def test_recovery_from_starts_inside_margins(robot, mode):
    sep, relaxed, collided, d0, gap = _run(robot, mode)
    floor = np.minimum(d0, SAFETY_DISTANCE_M) - SEPARATION_TOL_M
    assert np.all(sep.min(axis=1) >= floor), (sep.min(axis=1) - floor).min()
    assert not collided.any() and sep.min() >= BODY_M
    assert np.all(sep[:, -1] >= SAFETY_DISTANCE_M - SEPARATION_TOL_M), sep[:, -1].min()
    # Every margin recovered: the filter points are at least the pair distance apart again.
    assert np.all(gap >= -SEPARATION_TOL_M), gap.min()
    if robot == "unicycle":  # look-ahead points start up to 9 cm inside their 0.21 m margin
        assert relaxed.sum() > 0  # so the QP really could not meet every row at first


@pytest.mark.slow
def test_recovery_fails_when_relaxation_brakes(monkeypatch):
    """Mutation: brake instead of relaxing (the filter's last resort): the team stays stuck."""

    def brake(A, b, h, box_A, box_b, u0, weight, iters, xp):
        return xp.zeros(2, u0.dtype), xp.zeros((), u0.dtype), xp.zeros((), bool)

    monkeypatch.setattr(safety_filter, "_relaxed_one", brake)
    _, _, _, _, gap = _run("unicycle", "decentralised")
    assert gap.min() < -SEPARATION_TOL_M


@settings(max_examples=300)
@given(
    st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-np.pi, np.pi)),
    st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-np.pi, np.pi)),
)
def test_unicycle_bodies_apart_while_control_point_barrier_holds(a, b):
    """|p_i - p_j| >= d + 2 l with |p - c| = l implies |c_i - c_j| >= d >= body diameter."""
    task = NavigationTask(NavigationConfig(robots=2, scenario="random", robot="unicycle"))
    params = task.default_params()
    cbf = cbf_params(task, params, SAFETY_DISTANCE_M, 10.0)
    pose = np.array([a, b], np.float64)
    pts = task.robot.control_point(pose[:, :2], pose[:, 2], params, np)
    assume(np.linalg.norm(pts[0] - pts[1]) >= float(cbf.safety_distance))
    centres = np.linalg.norm(pose[0, :2] - pose[1, :2])
    assert centres >= SAFETY_DISTANCE_M - 1e-6 >= BODY_M
