"""The onboard per-robot pipeline (pure NumPy) against the batched JAX closed loop.

``marl_robots.nodes.onboard`` is what the nodes run; ``closed_loop.control`` is what the
simulation and training run.  These tests pin them together with the shipped parameter files,
and cover the parameter validation and fail-closed branches.  No ROS needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

jax = pytest.importorskip("jax")

from marl_robots.controllers.safety_filter import FilterStatus  # noqa: E402
from marl_robots.nodes import onboard  # noqa: E402
from marl_robots.nodes.expansion import PARAM_FILES, fleet_parameters  # noqa: E402
from marl_robots.nodes.fleet import fleet_from_scenario  # noqa: E402
from marl_robots.sim import closed_loop  # noqa: E402
from marl_robots.sim.tasks.navigation import NavigationConfig, NavigationTask  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: float32 (JAX) vs float64 (NumPy) on commands of O(0.2 m/s) and O(1 rad/s); omega divides the
#: lateral point velocity by the 0.04 m look-ahead, so it gets a looser bound.
V_ATOL = 1e-4
OMEGA_ATOL = 2e-3
N_ROBOTS = 8
STEPS = 600


def node_params(executable: str, fleet, rid: int, **overrides) -> dict:
    """Parameters a node would see: declared defaults, the shipped file, the expansion."""
    specs = {"controller_node": onboard.CONTROLLER_PARAMS,
             "safety_filter_node": onboard.SAFETY_FILTER_PARAMS}[executable]
    params = onboard.param_defaults(specs)
    path = ROOT / "controllers" / PARAM_FILES[executable]
    params.update(yaml.safe_load(path.read_text())["/**"]["ros__parameters"])
    params.update(fleet_parameters(fleet, rid))
    params.setdefault("obstacles", [])
    params.update(overrides)
    return params


@pytest.fixture(scope="module")
def recorded():
    """A closed-loop antipodal rollout with the default configuration."""
    task = NavigationTask(NavigationConfig(robots=N_ROBOTS, scenario="antipodal"))
    params = task.default_params()
    state = task.reset(jax.random.PRNGKey(0), params)
    cfg = closed_loop.ControlConfig()
    cbf = closed_loop.cbf_params(task, params)
    final, agg, traj = closed_loop.rollout(task, cfg, state, params, cbf, STEPS)
    return task, cfg, params, cbf, state, final, agg, traj


def test_pure_closed_loop_reaches_every_goal_without_collision(recorded):
    """Precondition of the ROS whole-stack test: the JAX closed loop itself is live and safe."""
    *_, final, agg, _ = recorded
    reached = np.asarray(final.reached_step)
    assert np.all(reached >= 0), f"robots that never reached their goal: {reached}"
    assert not bool(agg.collided.any())


def test_onboard_pipeline_matches_closed_loop_control(recorded):
    task, cfg, params, cbf, state, _, _, traj = recorded
    fleet = fleet_from_scenario(N_ROBOTS)
    setups = [
        (onboard.pipeline_setup(node_params("controller_node", fleet, i), fleet),
         onboard.pipeline_setup(node_params("safety_filter_node", fleet, i), fleet))
        for i in range(N_ROBOTS)
    ]
    control = jax.jit(lambda st: closed_loop.control(task, cfg, st, params, cbf))
    compared = intervened = 0
    for t in range(0, STEPS, 5):
        out = control(state._replace(pos=traj.pos[t], yaw=traj.yaw[t]))
        poses = np.concatenate([np.asarray(traj.pos[t], float),
                                np.asarray(traj.yaw[t], float)[:, None]], axis=1)
        for i, (ctrl, filt) in enumerate(setups):
            nom = onboard.nominal_command(poses, i, np.asarray(state.goal[i], float), ctrl)
            np.testing.assert_allclose(nom, np.asarray(out.nominal[i]), atol=V_ATOL * 10,
                                       err_msg=f"nominal, step {t}, robot {i}")
            # Filter the JAX nominal so that a nominal mismatch cannot hide a filter mismatch.
            res = onboard.filter_command(poses, i, np.asarray(out.nominal[i], float), filt)
            assert res.status == int(out.status[i]), f"status, step {t}, robot {i}"
            np.testing.assert_allclose(res.command[0], float(out.action[i, 0]), atol=V_ATOL)
            np.testing.assert_allclose(res.command[1], float(out.action[i, 1]), atol=OMEGA_ATOL)
            compared += 1
            intervened += bool(out.intervened[i])
    assert intervened > 20, "the recorded inputs must exercise the filter, not only pass through"
    assert compared == N_ROBOTS * len(range(0, STEPS, 5))


@pytest.mark.parametrize(
    ("executable", "override", "name"),
    [
        ("safety_filter_node", {"safety_distance_m": -0.1}, "safety_distance_m"),
        ("safety_filter_node", {"safety_distance_m": math.nan}, "safety_distance_m"),
        ("safety_filter_node", {"gamma": 0.0}, "gamma"),
        ("safety_filter_node", {"class_k": "quadratic"}, "class_k"),
        ("safety_filter_node", {"robot_id": 42}, "robot_id"),
        ("safety_filter_node", {"fleet_file": "/nonexistent/fleet.yaml"}, "fleet_file"),
        ("safety_filter_node", {"fleet_namespaces": ["robot_0"]}, "fleet_namespaces"),
        ("safety_filter_node", {"state_timeout_s": -1.0}, "state_timeout_s"),
        ("safety_filter_node", {"lookahead_m": 0.0}, "lookahead_m"),
        ("safety_filter_node", {"obstacles": [0.0, 1.0]}, "obstacles"),
        ("safety_filter_node", {"neighbours": 0}, "neighbours"),
        ("controller_node", {"bias": -0.5}, "bias"),
        ("controller_node", {"robot_id": -1}, "robot_id"),
        ("controller_node", {"safety_distance_m": -0.13}, "safety_distance_m"),
    ],
)
def test_invalid_parameters_are_named(executable, override, name):
    fleet = fleet_from_scenario(2)
    p = node_params(executable, fleet, 0, **override)
    with pytest.raises(onboard.ParameterError, match=f"invalid parameter '{name}'") as err:
        fl, _ = onboard.resolve_node_fleet(p)
        onboard.pipeline_setup(p, fl)
    assert err.value.name == name


def _two_robots():
    fleet = fleet_from_scenario(2)
    setup = onboard.pipeline_setup(node_params("safety_filter_node", fleet, 0), fleet)
    poses = np.array([[-0.3, 0.0, 0.0], [0.3, 0.0, math.pi]])
    return setup, poses


@pytest.mark.parametrize(
    ("row", "col", "value"),
    [(0, 0, math.nan), (0, 2, math.inf), (1, 1, math.nan), (1, 2, math.nan)],
)
def test_non_finite_state_brakes_with_invalid_input(row, col, value):
    setup, poses = _two_robots()
    poses[row, col] = value
    res = onboard.filter_command(poses, 0, np.array([0.2, 0.0]), setup)
    assert res.status == FilterStatus.INVALID_INPUT
    assert np.array_equal(res.command, np.zeros(2))
    assert "invalid input" in res.reason


def test_non_finite_nominal_brakes_and_clear_state_passes():
    setup, poses = _two_robots()
    res = onboard.filter_command(poses, 0, np.array([math.nan, 0.0]), setup)
    assert res.status == FilterStatus.INVALID_INPUT and not res.command.any()
    res = onboard.filter_command(poses, 0, np.array([0.05, 0.0]), setup)
    assert res.status == FilterStatus.OK
    np.testing.assert_allclose(res.command, [0.05, 0.0], atol=1e-12)


def test_odometry_problem_truth_table():
    assert onboard.odometry_problem((0.0, 0.0, 0.0), 100.0) is None
    assert "non-finite" in onboard.odometry_problem((math.nan, 0.0, 0.0), 100.0)
    assert "non-finite" in onboard.odometry_problem((0.0, 0.0, math.nan), 100.0)
    assert "absurd" in onboard.odometry_problem((1e9, 0.0, 0.0), 100.0)


def test_onboard_matches_closed_loop_inside_margins_and_for_coincident_robots(recorded):
    """States squeezed inside the pair margin (axle rows, relaxation) and a coincident pair."""
    task, cfg, params, cbf, state, _, _, traj = recorded
    fleet = fleet_from_scenario(N_ROBOTS)
    setups = [onboard.pipeline_setup(node_params("safety_filter_node", fleet, i), fleet)
              for i in range(N_ROBOTS)]
    control = jax.jit(lambda st: closed_loop.control(task, cfg, st, params, cbf))
    relaxed = 0
    for t, squeeze in ((200, 0.55), (230, 0.6), (260, 0.7), (0, 1.0)):
        pos = np.array(traj.pos[t], np.float32) * squeeze
        yaw = np.array(traj.yaw[t], np.float32)
        if squeeze == 1.0:  # robots 2 and 5 on the same pose
            pos[5], yaw[5] = pos[2], yaw[2]
        out = control(state._replace(pos=jax.numpy.asarray(pos), yaw=jax.numpy.asarray(yaw)))
        poses = np.concatenate([pos.astype(float), yaw.astype(float)[:, None]], axis=1)
        for i, filt in enumerate(setups):
            res = onboard.filter_command(poses, i, np.asarray(out.nominal[i], float), filt)
            assert res.status == int(out.status[i]), f"status, squeeze {squeeze}, robot {i}"
            np.testing.assert_allclose(res.command[0], float(out.action[i, 0]), atol=V_ATOL)
            np.testing.assert_allclose(res.command[1], float(out.action[i, 1]),
                                       atol=OMEGA_ATOL)
            relaxed += res.status == FilterStatus.RELAXED
    assert relaxed >= 4, "the squeezed states must exercise the relaxation"
