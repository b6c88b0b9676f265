"""Closed-loop flight: a controller (``pid`` or ``geometric``) tracking a reference on a backend.

``fly_jax`` runs controller + dynamics as one ``lax.scan`` (float32, pure JAX); ``fly`` steps
any ``QuadBackend`` from Python with the same controller in NumPy.  Both return the flown
positions, the reference positions and the commanded collective thrust, so tracking errors and
hover thrust are measured the same way in every backend.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.controllers import quad_geometric, quad_pid
from marl_robots.controllers.quad_setpoints import load_gains
from marl_robots.sim.robots import crazyflie_params as cf
from marl_robots.sim.robots import quadrotor
from marl_robots.sim.robots.quadrotor import AERO_OFF, Aero, QuadState

CONTROLLERS = ("geometric", "pid")


class Flight(NamedTuple):
    """A flown trajectory.

    Attributes:
        pos: ``[T, n, 3]`` flown positions [m].
        ref: ``[T, n, 3]`` reference positions [m].
        collective: ``[T, n]`` commanded collective thrust [N] (sum of the rotor commands).
    """

    pos: np.ndarray
    ref: np.ndarray
    collective: np.ndarray


def make_controller(name: str, params: cf.QuadParams, dt: float, xp=np):
    """``(init(n) -> ctrl, control(ctrl, state, setpoint) -> (rotor thrusts, ctrl))``.

    Args:
        name: ``geometric`` or ``pid``.
        params: model parameters the controller assumes.
        dt: control period [s].
        xp: ``numpy`` or ``jax.numpy``.
    """
    if name not in CONTROLLERS:
        raise KeyError(f"unknown controller {name!r}; known controllers: {', '.join(CONTROLLERS)}")
    gains = load_gains(name)
    if name == "geometric":

        def init(n, dtype=np.float64):
            return ()

        def control(ctrl, state, setpoint):
            return quad_geometric.control(state, setpoint, params, gains, xp), ctrl

        return init, control

    def init_pid(n, dtype=np.float64):
        return quad_pid.init(n, dtype, xp)

    def control_pid(ctrl, state, setpoint):
        return quad_pid.control(ctrl, state, setpoint, params, gains, dt, xp)

    return init_pid, control_pid


def fly_jax(
    controller: str, reference, state: QuadState, steps: int, dt: float, aero: Aero = AERO_OFF
) -> Flight:
    """Fly ``steps`` control periods in pure JAX (float32, one jitted ``lax.scan``).

    Args:
        controller: controller name.
        reference: ``reference(t [s], xp) -> Setpoint`` for all drones.
        state: initial state (``n`` drones).
        steps: number of periods of ``dt`` [s] (control at every physics step).
        dt: period [s].
        aero: aerodynamic effects.
    """
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), cf.crazyflie_params())
    init, control = make_controller(controller, params, dt, jnp)
    state = QuadState(*(jnp.asarray(x, jnp.float32) for x in state))

    def body(carry, k):
        s, c = carry
        sp = reference(k * dt, jnp)
        sp = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), sp)
        action, c = control(c, s, sp)
        s = quadrotor.step(s, action, params, dt, aero, jnp)
        return (s, c), (s.pos, sp.pos, jnp.sum(action, axis=-1))

    run = jax.jit(
        lambda s: jax.lax.scan(body, (s, init(s.pos.shape[0], jnp.float32)), jnp.arange(steps))[1]
    )
    pos, ref, collective = run(state)
    return Flight(
        np.asarray(pos, np.float64),
        np.asarray(ref, np.float64),
        np.asarray(collective, np.float64),
    )


def fly(backend, controller: str, reference, state: QuadState, steps: int) -> Flight:
    """Fly ``steps`` periods on a ``QuadBackend`` with the controller in NumPy (float64)."""
    init, control = make_controller(controller, backend.params, backend.dt, np)
    backend.reset(state)
    s = backend.get_state()
    ctrl = init(s.pos.shape[0])
    pos, ref, collective = [], [], []
    for k in range(steps):
        sp = reference(k * backend.dt, np)
        action, ctrl = control(ctrl, s, sp)
        s = backend.step(action)
        pos.append(s.pos)
        ref.append(np.asarray(sp.pos))
        collective.append(action.sum(axis=-1))
    return Flight(np.array(pos), np.array(ref), np.array(collective))


def rmse(flight: Flight, skip: int = 0) -> float:
    """Root-mean-square 3D position error [m] over the flight (after ``skip`` steps)."""
    err = flight.pos[skip:] - flight.ref[skip:]
    return float(np.sqrt(np.mean(np.sum(err**2, axis=-1))))
