"""Low-level flight controller: [collective thrust or 3D acceleration, body rates] -> rotors.

The action space a policy (or a cable-load MAV controller) uses on top of the rate loop:

    thrust:       f given [N], or f = m (a + g e3) . R e3 for a world acceleration a [m/s^2]
    body torque:  M = J k_p (w_d - w) + w x J w           (w_d: body-rate setpoint [rad/s])

then mixed into rotor thrusts (``quadrotor.mix``).
"""

from __future__ import annotations

import numpy as np

from marl_robots.controllers.quad_setpoints import RateGains
from marl_robots.core import math3d
from marl_robots.sim.robots import quadrotor
from marl_robots.sim.robots.crazyflie_params import QuadParams
from marl_robots.sim.robots.quadrotor import QuadState


def collective_from_acceleration(state: QuadState, acc, params: QuadParams, xp=np):
    """Collective thrust [N] ``[n]`` for a world acceleration ``acc [n, 3]`` [m/s^2].

    ``m (a + g e3) . R e3``: the part of the needed force that the rotors (along body z) give.
    """
    rot = math3d.quat_to_matrix(state.quat, xp)
    lift = acc + xp.asarray([0.0, 0.0, 1.0], dtype=acc.dtype) * params.gravity_mps2
    return params.mass_kg * xp.sum(lift * rot[..., 2], axis=-1)


def control(
    state: QuadState,
    rates,
    params: QuadParams,
    gains: RateGains,
    collective=None,
    acceleration=None,
    xp=np,
):
    """Rotor thrust commands [N] ``[n, 4]`` from a rate setpoint and a thrust or acceleration.

    Args:
        state: drones' state.
        rates: ``[n, 3]`` body-rate setpoint [rad/s].
        params: model parameters.
        gains: rate-loop gains.
        collective: ``[n]`` collective thrust [N]; or
        acceleration: ``[n, 3]`` world acceleration [m/s^2] (exactly one of the two).
        xp: ``numpy`` or ``jax.numpy``.
    """
    if (collective is None) == (acceleration is None):
        raise ValueError("give exactly one of collective (thrust [N]) and acceleration [m/s^2]")
    if collective is None:
        collective = collective_from_acceleration(state, acceleration, params, xp)
    w = state.omega
    inertia = params.inertia_kgm2
    k_p = xp.asarray(gains.rate_p, dtype=w.dtype)
    torque = inertia * k_p * (rates - w) + xp.cross(w, inertia * w)
    return quadrotor.mix(collective, torque, params, xp)
