"""Cascaded PID flight controller, structured like the Crazyflie firmware's PID controller.

    position P         v_sp = v_d + K_p,pos (p_d - p), capped at vel_max
    velocity PI        a_sp = a_d + K_p,vel e_v + K_i,vel int(e_v)
    thrust + attitude  F = m (a_sp + g e3), tilt capped; f = F . R e3; R_d from F and yaw
    attitude P         w_sp = -K_p,att e_R   (e_R = vee(R_d^T R - R^T R_d) / 2), capped
    rate PI            M = J (K_p,rate e_w + K_i,rate int(e_w)) + w x J w
    mixer              rotor thrusts (``quadrotor.mix``)

The integrators are the controller's state (``PidState``), carried explicitly so that the loop
is a pure function (jit / ``lax.scan``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from marl_robots.controllers.quad_setpoints import PidGains, Setpoint, desired_rotation, vee
from marl_robots.core import math3d
from marl_robots.sim.robots import quadrotor
from marl_robots.sim.robots.crazyflie_params import QuadParams
from marl_robots.sim.robots.quadrotor import QuadState


class PidState(NamedTuple):
    """Integrator states: ``vel_int [n, 3]`` [m], ``rate_int [n, 3]`` [rad]."""

    vel_int: object
    rate_int: object


def init(n: int, dtype=np.float64, xp=np) -> PidState:
    """Zero integrators for ``n`` drones."""
    return PidState(xp.zeros((n, 3), dtype), xp.zeros((n, 3), dtype))


def velocity_loop(
    ctrl: PidState, state: QuadState, setpoint: Setpoint, gains: PidGains, dt, xp=np
):
    """Position P and velocity PI of the cascade.

    Returns the commanded acceleration ``a_sp [n, 3]`` [m/s^2] (world, gravity excluded) and
    the updated velocity integrator ``[n, 3]``.
    """
    dtype = state.pos.dtype

    def g(v):
        return xp.asarray(v, dtype=dtype)

    v_sp = setpoint.vel + g(gains.pos_p) * (setpoint.pos - state.pos)
    speed = xp.linalg.norm(v_sp, axis=-1, keepdims=True)
    v_sp = v_sp * xp.minimum(1.0, gains.vel_max_mps / xp.maximum(speed, 1e-9))
    e_v = v_sp - state.vel
    vel_int = xp.clip(ctrl.vel_int + e_v * dt, -g(gains.vel_i_limit), g(gains.vel_i_limit))
    a_sp = setpoint.acc + g(gains.vel_p) * e_v + g(gains.vel_i) * vel_int
    return a_sp, vel_int


def track_acceleration(
    ctrl: PidState, state: QuadState, a_sp, yaw, params: QuadParams, gains: PidGains, dt, xp=np
):
    """Thrust + attitude P + rate PI + mixer for a commanded acceleration ``a_sp [n, 3]``.

    Returns the rotor thrusts [N] ``[n, 4]`` and the updated rate integrator ``[n, 3]``.
    """
    dtype = state.pos.dtype

    def g(v):
        return xp.asarray(v, dtype=dtype)

    force = params.mass_kg * (a_sp + g([0.0, 0.0, 1.0]) * params.gravity_mps2)
    # Tilt cap: the horizontal force may be at most tan(tilt_max) times the vertical one.
    fz = xp.maximum(force[:, 2], 0.1 * params.mass_kg * params.gravity_mps2)
    fxy = force[:, :2]
    cap = np.tan(gains.tilt_max_rad) * fz
    fxy = fxy * xp.minimum(1.0, cap / xp.maximum(xp.linalg.norm(fxy, axis=-1), 1e-9))[:, None]
    force = xp.concatenate([fxy, fz[:, None]], axis=-1)

    rot = math3d.quat_to_matrix(state.quat, xp)
    collective = xp.sum(force * rot[..., 2], axis=-1)
    rot_d = desired_rotation(force, yaw, xp)
    e_r = 0.5 * vee(xp.swapaxes(rot_d, -1, -2) @ rot - xp.swapaxes(rot, -1, -2) @ rot_d, xp)
    rate_max = g(gains.rate_max_radps)
    w_sp = xp.clip(-g(gains.att_p) * e_r, -rate_max, rate_max)
    w = state.omega
    e_w = w_sp - w
    rate_int = xp.clip(ctrl.rate_int + e_w * dt, -g(gains.rate_i_limit), g(gains.rate_i_limit))
    inertia = params.inertia_kgm2
    torque = inertia * (g(gains.rate_p) * e_w + g(gains.rate_i) * rate_int) + xp.cross(
        w, inertia * w
    )
    return quadrotor.mix(collective, torque, params, xp), rate_int


def control(
    ctrl: PidState,
    state: QuadState,
    setpoint: Setpoint,
    params: QuadParams,
    gains: PidGains,
    dt: float,
    xp=np,
):
    """One control period: rotor thrusts [N] ``[n, 4]`` and the updated integrators.

    ``velocity_loop`` then ``track_acceleration`` (a safety filter may sit between the two).

    Args:
        ctrl: integrator state.
        state: drones' state.
        setpoint: desired position, velocity, acceleration (world) and yaw.
        params: model parameters.
        gains: gains and limits.
        dt: control period [s].
        xp: ``numpy`` or ``jax.numpy``.
    """
    a_sp, vel_int = velocity_loop(ctrl, state, setpoint, gains, dt, xp)
    thrust, rate_int = track_acceleration(ctrl, state, a_sp, setpoint.yaw, params, gains, dt, xp)
    return thrust, PidState(vel_int, rate_int)
