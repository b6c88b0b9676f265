"""Parity of the NumPy benchmark baseline with the JAX closed loop.

``sim.numpy_loop.numpy_step`` claims to do the same work as ``closed_loop.control`` followed by
``NavigationTask.step``.  From the same states, taken along a JAX rollout of every scenario,
both must give the same actions, filter status, next poses and separation metric.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from marl_robots.sim.closed_loop import control
from marl_robots.sim.numpy_loop import numpy_step, to_numpy_inputs
from marl_robots.sim.robots import ROBOTS
from marl_robots.sim.run import RunSpec, build
from marl_robots.sim.scenarios import SCENARIOS

#: Action agreement, float32 vs float32 [m/s for velocities, rad/s for turn rates].
ACTION_ATOL = 1e-4
#: Next-position agreement after one step [m].
POS_ATOL_M = 1e-5
#: Next-heading agreement after one step [rad].
YAW_ATOL_RAD = 1e-5
#: Minimum-separation agreement [m].
SEP_ATOL_M = 1e-5
#: Rollout steps at which the two implementations are compared.
CHECK_STEPS = (0, 100, 300)


@functools.cache
def _jax_step(robot: str, n: int, filt: str):
    """One jitted closed-loop period (control + task step), shared by all scenarios.

    ``control`` and ``NavigationTask.step`` do not depend on the scenario (it only lays out
    the initial state), so one compiled function per (robot, n, filter) serves all of them;
    ``_setup`` checks that the configurations differ in nothing else.
    """
    task, cfg, _, _ = build(
        RunSpec(robots=n, scenario=SCENARIOS.names()[0], robot=robot, filter=filt)
    )

    @jax.jit
    def step(state, params, cbf):
        out = control(task, cfg, state, params, cbf)
        nxt, metrics = task.step(state, out.action, params)
        return nxt, out, metrics

    return task, cfg, step


def _setup(scenario, robot, n, filt):
    task, cfg, params, cbf = build(RunSpec(robots=n, scenario=scenario, robot=robot, filter=filt))
    shared_task, shared_cfg, step = _jax_step(robot, n, filt)
    assert dataclasses.replace(task.config, scenario=shared_task.config.scenario) == (
        shared_task.config
    )
    assert cfg == shared_cfg
    return task, cfg, params, cbf, step


def _states_along_rollout(task, params, cbf, step):
    state = task.reset(jax.random.PRNGKey(0), params)
    states = {}
    for t in range(max(CHECK_STEPS) + 1):
        if t in CHECK_STEPS:
            states[t] = state
        state, _, _ = step(state, params, cbf)
    return states


@pytest.mark.parametrize("filt", ["cbf", "none"])
@pytest.mark.parametrize("n", [4, 16])
@pytest.mark.parametrize("robot", ROBOTS.names())
@pytest.mark.parametrize("scenario", SCENARIOS.names())
def test_numpy_step_matches_jax_closed_loop(scenario, robot, n, filt):
    task, cfg, params, cbf, step = _setup(scenario, robot, n, filt)
    for t, state in _states_along_rollout(task, params, cbf, step).items():
        nxt, out, metrics = step(state, params, cbf)
        np_state, np_params, np_cbf = to_numpy_inputs(state, params, cbf)
        np_next, action, status, min_sep = numpy_step(task, cfg, np_state, np_params, np_cbf)
        where = f"{scenario} {robot} n={n} filter={filt} step {t}"
        assert action.dtype == np.float32, where
        assert_allclose(action, np.asarray(out.action), atol=ACTION_ATOL, err_msg=where)
        assert_array_equal(status, np.asarray(out.status), err_msg=where)
        assert_allclose(np_next["pos"], np.asarray(nxt.pos), atol=POS_ATOL_M, err_msg=where)
        dyaw = np.angle(np.exp(1j * (np_next["yaw"].astype(np.float64) - np.asarray(nxt.yaw))))
        # A heading that follows the velocity (single integrator) is only as well defined as
        # the velocity's direction: +-ACTION_ATOL on a speed |v| turns it by ACTION_ATOL / |v|.
        speed = np.linalg.norm(np.asarray(nxt.pos - state.pos), axis=-1) / task.config.dt_s
        yaw_tol = YAW_ATOL_RAD + ACTION_ATOL / np.maximum(speed, 1e-12)
        assert np.all(np.abs(dyaw) <= yaw_tol), f"{where}: heading {dyaw} vs {yaw_tol}"
        assert_allclose(min_sep, float(metrics.min_separation_m), atol=SEP_ATOL_M, err_msg=where)
        # numpy_step returns updated copies and leaves its input alone.
        assert_array_equal(np_state["pos"], np.asarray(state.pos))


def test_parity_states_exercise_the_filter():
    """The compared states include ones where the filter changes the nominal command."""
    task, cfg, params, cbf, step = _setup("antipodal", "unicycle", 16, "cbf")
    states = _states_along_rollout(task, params, cbf, step)
    intervened = [
        bool(np.any(np.asarray(step(s, params, cbf)[1].intervened))) for s in states.values()
    ]
    assert any(intervened), "no compared state has an active filter: parity would be vacuous"
