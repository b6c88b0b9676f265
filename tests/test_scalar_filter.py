"""The onboard fast path (``controllers.scalar_filter``, ``onboard.filter_command``) against the
reference filter (``filter_robots`` with NumPy; ``onboard.filter_command_reference``).

Status must be equal and the command equal to ``U_ATOL``, on random problems (infeasible ones
from starts inside margins, coincident points, robots at an obstacle's centre, NaN/inf inputs),
on random fleets through the onboard pipeline, and on states recorded from JAX closed loops.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl_robots.controllers import cbf, scalar_filter
from marl_robots.controllers.safety_filter import (
    CBFParams,
    FilterConfig,
    FilterStatus,
    Limits,
    World,
    filter_robots,
)
from marl_robots.nodes import onboard
from marl_robots.nodes.expansion import fleet_parameters
from marl_robots.nodes.fleet import RobotType, fleet_from_scenario

#: Fast path vs reference, both float64 with the same formulas [m/s].
U_ATOL = 1e-9
#: Commands after the unicycle map (omega divides by the 0.04 m look-ahead) [m/s, rad/s].
CMD_ATOL = 1e-7
#: Violation of a hard row allowed by the exact projection [m/s] (``qp.FEAS_TOL``).
ROW_TOL = 1e-5
K = 6
N_PER_CONFIG = 5_000
CONFIGS = [
    FilterConfig(class_k="linear", dt_s=0.033, obstacle_rows=2),
    FilterConfig(class_k="cubic", dt_s=0.0, obstacle_rows=2),
]
WORLD = World(
    np.array([[0.3, 0.2, 0.05], [-0.5, -0.3, 0.04], [0.9, -0.4, 0.03], [-1.0, 0.5, 0.12]]),
    np.array([True, True, True, False]),
    np.array([-1.6, 1.6, -1.0, 1.0]),
)
#: Margins with a step part (``CBFParams.step_margin``), so the band clip is compared too.
PARAMS = CBFParams(
    gamma=None, safety_distance=0.21, obstacle_margin=0.095, wall_margin=0.095, step_margin=5e-4
)


def random_problems(rng, n):
    """``filter_robots`` inputs for n independent robots (world shared)."""
    p = rng.uniform([-1.5, -0.9], [1.5, 0.9], size=(n, 2))
    beyond = rng.random(n) < 0.004  # beyond a wall's margin: infeasible -> relaxed
    p[beyond] = rng.uniform([-1.6, -1.0], [1.6, 1.0], size=(beyond.sum(), 2))
    # Neighbours: most outside the pair distance 0.21 m, many within a step or two of it; in a
    # few problems one is inside it (a start inside the margin: infeasible -> relaxed).
    ang = rng.uniform(0, 2 * np.pi, (n, K))
    rad = rng.choice([0.215, 0.23, 0.3, 0.6, 1.5], size=(n, K)) * rng.uniform(1.0, 1.3, (n, K))
    squeezed = rng.random(n) < 0.005
    rad[squeezed, 1] = rng.uniform(0.02, 0.2, squeezed.sum())
    nbr = p[:, None] + rad[..., None] * np.stack([np.cos(ang), np.sin(ang)], -1)
    mask = rng.random((n, K)) < 0.8
    order = rng.choice([-1, 1], size=(n, K)).astype(np.int32)
    coincident = rng.random(n) < 0.005
    nbr[coincident, 0] = p[coincident]
    mask[coincident, 0] = True
    at_obstacle = rng.random(n) < 0.004
    p[at_obstacle] = WORLD.obstacles[0, :2]
    u = rng.normal(size=(n, 2)) * 0.2
    gamma = rng.uniform(0.5, 20.0, n)
    half = rng.uniform(0.05, 0.3, (n, 2))
    yaw = rng.uniform(-np.pi, np.pi, n)
    speed = np.where(rng.random(n) < 0.5, np.inf, rng.uniform(0.05, 0.3, n))
    # Extra rows (as axle rows): random normals, some violated, some absent.
    e = 2
    ea = rng.normal(size=(n, e, 2)) * 0.2
    eh = np.abs(rng.normal(size=(n, e))) * 0.01 * np.where(rng.random((n, e)) < 0.005, -1, 1)
    eb = 0.5 * 5.0 * eh
    absent = rng.random((n, e)) < 0.6
    ea[absent], eb[absent], eh[absent] = 0.0, cbf.INACTIVE_B, np.inf
    # Garbage: NaN/inf in every input kind.
    bad = rng.random(n) < 0.03
    which = rng.integers(0, 5, n)
    for kind, arr in enumerate((p, u, nbr[:, 0], gamma[:, None], ea[:, 0])):
        sel = bad & (which == kind)
        arr[sel, 0] = rng.choice([np.nan, np.inf, -np.inf], size=sel.sum())
    mask[bad & (which == 2), 0] = True
    return p, u, nbr, mask, order, gamma, half, yaw, speed, cbf.Rows(ea, eb, eh)


@pytest.mark.parametrize("config", CONFIGS, ids=["linear-dt", "cubic"])
def test_fast_path_equals_filter_robots(config):
    rng = np.random.default_rng(11)
    p, u, nbr, mask, order, gamma, half, yaw, speed, extra = random_problems(rng, N_PER_CONFIG)
    params = PARAMS._replace(gamma=gamma)
    with np.errstate(invalid="ignore", over="ignore"):
        u_ref, info = filter_robots(
            p, u, nbr, mask, WORLD, params, Limits(half, yaw, speed), config, np, order, extra
        )
    status = np.empty(len(p), dtype=int)
    u_fast = np.empty_like(u_ref)
    slack = np.empty(len(p))
    for i in range(len(p)):
        rows = np.concatenate([extra.A[i], extra.b[i][:, None], extra.h[i][:, None]], -1)
        res = scalar_filter.filter_one(
            p[i],
            u[i],
            nbr[i],
            mask[i],
            WORLD,
            params,
            gamma[i],
            half[i],
            yaw[i],
            speed[i],
            config,
            order[i],
            rows.tolist(),
        )
        status[i], u_fast[i], slack[i] = res.status, res.u, res.slack
    counts = {s.name: int(np.sum(status == s)) for s in FilterStatus}
    print(
        f"{config.class_k}: {len(p)} problems, statuses {counts}, "
        f"max |u_fast - u_ref| = {np.abs(u_fast - u_ref).max():.3g} m/s"
    )
    np.testing.assert_array_equal(status, info.status)
    np.testing.assert_allclose(u_fast, u_ref, atol=U_ATOL, rtol=0)
    np.testing.assert_allclose(slack, info.slack, atol=U_ATOL, rtol=0)
    # Every branch is exercised.
    assert counts["OK"] > 3000 and counts["RELAXED"] > 30 and counts["INVALID_INPUT"] > 50
    assert np.sum(np.any(u_ref != u, -1) & (info.status == FilterStatus.OK)) > 500


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    spread=st.floats(0.05, 1.0),
    u_scale=st.floats(0.0, 1.0),
)
def test_ok_output_meets_every_row_and_the_reference(seed, spread, u_scale):
    """Property: an OK command satisfies every barrier row and the box, and is the reference."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-1.4, 1.4, 2) * np.array([1.0, 0.6])
    nbr = p + rng.normal(size=(K, 2)) * spread
    mask = np.ones(K, dtype=bool)
    order = np.where(np.arange(K) % 2 == 0, 1, -1)
    u = rng.normal(size=2) * u_scale
    config = CONFIGS[0]
    params = PARAMS._replace(gamma=np.array([5.0]))
    res = scalar_filter.filter_one(
        p, u, nbr, mask, WORLD, params, 5.0, (0.2, 0.144), 0.3, math.inf, config, order
    )
    u_ref, info = filter_robots(
        p[None],
        u[None],
        nbr[None],
        mask[None],
        WORLD,
        params,
        Limits(np.array([[0.2, 0.144]]), np.array([0.3]), np.array([np.inf])),
        config,
        np,
        order[None],
    )
    assert res.status == int(info.status[0])
    np.testing.assert_allclose(res.u, u_ref[0], atol=U_ATOL, rtol=0)
    if res.status == FilterStatus.OK:
        rr = cbf.robot_rows(
            p,
            nbr,
            mask,
            PARAMS.safety_distance,
            np.float64(5.0),
            config.class_k,
            config.dt_s,
            0.5,
            np,
            order,
            PARAMS.step_margin,
        )
        ob = cbf.obstacle_rows(
            p,
            WORLD.obstacles,
            WORLD.obstacle_mask,
            PARAMS.obstacle_margin,
            np.float64(5.0),
            config.class_k,
            config.dt_s,
            2,
            np,
            PARAMS.step_margin,
        )
        wl = cbf.wall_rows(
            p, WORLD.arena, PARAMS.wall_margin, np.float64(5.0), config.class_k, config.dt_s, np,
            PARAMS.step_margin,
        )
        box = cbf.box_rows(np.float64(0.3), np.array([0.2, 0.144]), np)
        for rows in (rr, ob, wl, box):
            norm = np.maximum(np.linalg.norm(rows.A, axis=-1), 1e-12)
            assert np.all((rows.A @ np.asarray(res.u) - rows.b) / norm <= ROW_TOL)


def _setup(n, scenario="antipodal", robot="unicycle"):
    fleet = fleet_from_scenario(n, scenario)
    fleet = dataclasses.replace(fleet, robot_types=(RobotType(robot=robot),))
    params = onboard.param_defaults(onboard.SAFETY_FILTER_PARAMS) | fleet_parameters(fleet, 0)
    params.setdefault("obstacles", [])
    params["robot"] = robot
    return fleet, onboard.pipeline_setup(params, fleet)


def _compare(poses, index, nominal, setup):
    fast = onboard.filter_command(poses, index, nominal, setup)
    ref = onboard.filter_command_reference(poses, index, nominal, setup)
    assert fast.status == ref.status, (poses, index, nominal)
    np.testing.assert_allclose(fast.command, ref.command, atol=CMD_ATOL, rtol=0)
    assert abs(fast.slack - ref.slack) <= U_ATOL
    np.testing.assert_allclose(fast.info.barrier, ref.info.barrier, atol=U_ATOL, rtol=1e-12)
    return fast.status, float(np.abs(fast.command - ref.command).max())


@pytest.mark.parametrize("robot", ["unicycle", "single_integrator"])
def test_onboard_fast_path_equals_reference_on_random_fleets(robot):
    """Random fleets through the whole onboard pipeline: squeezed, coincident, garbage."""
    rng = np.random.default_rng(5)
    statuses, worst, calls = [], 0.0, 0
    for n in (2, 7, 16):
        fleet, setup = _setup(n, robot=robot)
        start = np.array([r.initial_pose for r in fleet.robots])
        for trial in range(100):
            poses = start.copy()
            poses[:, :2] *= rng.choice([1.0, 0.6, 0.3, 0.15])
            poses[:, :2] += rng.normal(size=(n, 2)) * 0.05
            poses[:, 2] = rng.uniform(-np.pi, np.pi, n)
            index = int(rng.integers(n))
            if trial % 10 == 1:  # coincident with a neighbour
                poses[(index + 1) % n] = poses[index]
            if trial % 10 == 2:  # garbage somewhere in the fleet or in the nominal
                poses[rng.integers(n), rng.integers(3)] = rng.choice([np.nan, np.inf])
            nominal = rng.normal(size=2) * [0.15, 2.0]
            if trial % 10 == 3:
                nominal[rng.integers(2)] = np.nan
            s, diff = _compare(poses, index, nominal, setup)
            statuses.append(s)
            worst = max(worst, diff)
            calls += 1
    counts = {s.name: statuses.count(s) for s in FilterStatus}
    print(
        f"onboard {robot}: {calls} random fleet states, statuses {counts}, "
        f"max |cmd diff| = {worst:.3g}"
    )
    assert counts["OK"] > 100 and counts["RELAXED"] > 20 and counts["INVALID_INPUT"] > 20


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["antipodal", "corridor"])
def test_onboard_fast_path_equals_reference_on_closed_loop_states(scenario):
    """States recorded from a JAX closed loop of 32 unicycles, as they are and squeezed; the
    nominal commands from the onboard controller pipeline."""
    import jax  # noqa: PLC0415

    from marl_robots.sim import closed_loop  # noqa: PLC0415
    from marl_robots.sim.tasks.navigation import NavigationConfig, NavigationTask  # noqa: PLC0415

    n, steps = 32, 200
    task = NavigationTask(NavigationConfig(robots=n, scenario=scenario))
    jparams = task.default_params()
    state = task.reset(jax.random.PRNGKey(0), jparams)
    cbfp = closed_loop.cbf_params(task, jparams)
    _, _, traj = closed_loop.rollout(
        task, closed_loop.ControlConfig(), state, jparams, cbfp, steps
    )
    fleet, setup = _setup(n, scenario)
    ctrl = onboard.param_defaults(onboard.CONTROLLER_PARAMS) | fleet_parameters(fleet, 0)
    ctrl.setdefault("obstacles", [])
    ctrl_setup = onboard.pipeline_setup(ctrl, fleet)
    statuses, worst = [], 0.0
    for t in range(0, steps + 1, 40):
        for squeeze in (1.0, 0.9):
            poses = np.concatenate(
                [
                    np.asarray(traj.pos[t], float) * squeeze,
                    np.asarray(traj.yaw[t], float)[:, None],
                ],
                axis=1,
            )
            for i in range(n):
                nominal = onboard.nominal_command(poses, i, fleet.robots[i].goal, ctrl_setup)
                s, diff = _compare(poses, i, nominal, setup)
                statuses.append(s)
                worst = max(worst, diff)
    counts = {s.name: statuses.count(s) for s in FilterStatus}
    print(
        f"{scenario}: {len(statuses)} closed-loop robot states, statuses {counts}, "
        f"max |cmd diff| = {worst:.3g}"
    )
    assert counts["OK"] > 100 and counts["RELAXED"] > 5
