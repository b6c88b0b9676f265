"""Geometric tracking controller on SE(3) (Lee, Leok, McClamroch, CDC 2010), ENU frame.

    F   = m (-k_x e_x - k_v e_v + g e3 + a_d)            desired force [N], world
    f   = F . R e3                                        collective thrust [N]
    R_d = [b1_d, b2_d, F / |F|] with heading yaw_d
    e_R = vee(R_d^T R - R^T R_d) / 2,  e_w = w            (desired body rate taken as 0)
    M   = J (-k_r e_R - k_w e_w) + w x J w                body torque [N m]

then mixed into rotor thrusts (``quadrotor.mix``).  Gains per unit inertia (the YAML).
"""

from __future__ import annotations

import numpy as np

from marl_robots.controllers.quad_setpoints import GeometricGains, Setpoint, desired_rotation, vee
from marl_robots.core import math3d
from marl_robots.sim.robots import quadrotor
from marl_robots.sim.robots.crazyflie_params import QuadParams
from marl_robots.sim.robots.quadrotor import QuadState


def control(
    state: QuadState, setpoint: Setpoint, params: QuadParams, gains: GeometricGains, xp=np
):
    """Rotor thrust commands [N] ``[n, 4]`` that track ``setpoint``.

    Args:
        state: drones' state.
        setpoint: desired position, velocity, acceleration (world) and yaw.
        params: model parameters (mass, inertia, mixer).
        gains: controller gains.
        xp: ``numpy`` or ``jax.numpy``.
    """
    dtype = state.pos.dtype

    def g(v):
        return xp.asarray(v, dtype=dtype)

    e_x = state.pos - setpoint.pos
    e_v = state.vel - setpoint.vel
    e3 = g([0.0, 0.0, 1.0])
    force = params.mass_kg * (
        -g(gains.k_x) * e_x - g(gains.k_v) * e_v + params.gravity_mps2 * e3 + setpoint.acc
    )
    rot = math3d.quat_to_matrix(state.quat, xp)
    collective = xp.sum(force * rot[..., 2], axis=-1)
    rot_d = desired_rotation(force, setpoint.yaw, xp)
    rt = xp.swapaxes(rot, -1, -2)
    rdt = xp.swapaxes(rot_d, -1, -2)
    e_r = 0.5 * vee(rdt @ rot - rt @ rot_d, xp)
    w = state.omega
    inertia = params.inertia_kgm2
    torque = inertia * (-g(gains.k_r) * e_r - g(gains.k_omega) * w) + xp.cross(w, inertia * w)
    return quadrotor.mix(collective, torque, params, xp)
