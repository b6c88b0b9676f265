"""Rigid-body quadrotor dynamics, batched over drones, in NumPy or JAX (``xp``).

State (per drone, leading axis ``n``): position and velocity in the world frame (ENU, z up),
attitude as a unit (x, y, z, w) quaternion body -> world (``core.math3d``), body-frame angular
velocity, and the thrust of each rotor [N] (the motor state).  The action is the commanded
thrust of each rotor [N], M1..M4 (``crazyflie_params`` for the layout).

One step of ``dt``:
  1. forces and torques from the *current* rotor thrusts (so a command acts one step later,
     as in MuJoCo's actuator activation): collective thrust along body z, rotor torques through
     the allocation matrix, optional ground effect (extra thrust near z = 0), body drag
     ``-K (sum omega_i) v_body`` and downwash from drones above;
  2. semi-implicit Euler: velocities first, then positions with the new velocities, attitude
     with ``q exp(omega dt / 2)`` -- the integrator of MuJoCo's default ``Euler`` option, so the
     JAX and MuJoCo backends agree to float precision without aerodynamics;
  3. first-order motor lag, integrated exactly: ``f <- f_cmd + (f - f_cmd) exp(-dt / tau)``
     with ``f_cmd`` clipped to ``[0, thrust_max]``.

With ``xp=jax.numpy`` it is jit-able, vmap-able (over drones, environments and params) and
differentiable.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from marl_robots.core import math3d
from marl_robots.sim.robots import crazyflie_params as cf


class QuadState(NamedTuple):
    """State of ``n`` quadrotors (a pytree).

    Attributes:
        pos: ``[n, 3]`` position [m], world frame.
        vel: ``[n, 3]`` velocity [m/s], world frame.
        quat: ``[n, 4]`` attitude, unit (x, y, z, w) quaternion, body -> world.
        omega: ``[n, 3]`` angular velocity [rad/s], body frame.
        thrust: ``[n, 4]`` rotor thrusts [N], M1..M4 (the motor state).
    """

    pos: object
    vel: object
    quat: object
    omega: object
    thrust: object


class Aero(NamedTuple):
    """Which aerodynamic effects a step includes (static: hashable Python bools)."""

    drag: bool = False
    ground_effect: bool = False
    downwash: bool = False


AERO_OFF = Aero()
AERO_ON = Aero(drag=True, ground_effect=True, downwash=True)


def hover_state(pos, params: cf.QuadParams, xp=np) -> QuadState:
    """Drones at ``pos [n, 3]``, level, at rest, rotors at hover thrust."""
    pos = xp.asarray(pos)
    n = pos.shape[0]
    dtype = pos.dtype
    quat = xp.concatenate([xp.zeros((n, 3), dtype), xp.ones((n, 1), dtype)], axis=-1)
    hover = xp.full((n, cf.ROTORS), 1.0, dtype) * cf.hover_thrust_per_rotor(params)
    zeros = xp.zeros((n, 3), dtype)
    return QuadState(pos=pos, vel=zeros, quat=quat, omega=zeros, thrust=hover.astype(dtype))


def rotor_speeds(thrust, params: cf.QuadParams, xp=np):
    """Rotor speeds [rad/s] ``[..., 4]`` of rotor thrusts [N]: ``sqrt(f / k_f)``.

    Thrusts below 1e-12 N count as 1e-12 N (0.006 rad/s) so that the gradient stays finite.
    """
    return xp.sqrt(xp.maximum(thrust, 1e-12) / params.thrust_coeff)


def ground_effect_thrust(pos, rot, thrust, params: cf.QuadParams, xp=np):
    """Extra thrust per rotor [N] ``[n, 4]`` near the ground plane z = 0.

    ``f k_ge (r_p / (4 h))^2`` with ``h`` the rotor's height, clipped below at
    ``ground_effect_min_height_m`` (Shi et al. 2019, as in Panerati et al. 2021); zero for a
    drone upside down.
    """
    r_body = cf.rotor_positions(params, xp)  # [4, 3]
    rotor_z = pos[:, None, 2] + xp.einsum("nj,rj->nr", rot[:, 2, :], r_body)
    h = xp.maximum(rotor_z, params.ground_effect_min_height_m)
    gain = params.ground_effect_coeff * (params.prop_radius_m / (4.0 * h)) ** 2
    upright = (rot[:, 2, 2] > 0.0)[:, None]
    return xp.where(upright, thrust * gain, 0.0)


def downwash_forces(pos, params: cf.QuadParams, xp=np):
    """Downwash force on every drone [N] ``[..., n, 3]`` (world frame, -z), all pairs at once.

    Drone ``i`` below drone ``j`` (``dz = z_j - z_i > 0``, horizontal distance ``d``) feels
    ``-alpha (r_p / (4 dz))^2 exp(-(d / beta)^2 / 2)`` with ``beta = b1 dz + b0`` (the
    empirical model of Panerati et al. 2021).  ``dz`` is clipped below at the propeller
    radius so that two drones at nearly the same height do not see an unbounded force.

    The peak ``alpha (r_p / (4 dz))^2`` is capped at the upper drone's weight ``m g``: a
    hovering rotor's wake carries a momentum flux equal to its thrust (momentum theory), so it
    cannot push a drone below harder than that.  Uncapped, gym-pybullet-drones' coefficients
    give 3.2 m g at dz = 0.3 m and 29 m g at dz = 0.1 m (the peak reaches m g at dz = 0.53 m),
    which threw the drones of an antipodal swap apart.  The cap changes nothing above 0.53 m.
    Vectorised over the ``[n, n]`` pair matrix: no Python loop over pairs.

    Args:
        pos: ``[..., n, 3]`` positions [m], world frame.
        params: quadrotor parameters (scalar leaves).
        xp: ``numpy`` or ``jax.numpy``.
    """
    alpha, b1, b0 = params.downwash_coeffs[0], params.downwash_coeffs[1], params.downwash_coeffs[2]
    diff = pos[..., None, :, :] - pos[..., :, None, :]  # [.., i, j, 3]: p_j - p_i
    dz = diff[..., 2]
    d_xy2 = diff[..., 0] ** 2 + diff[..., 1] ** 2
    above = dz > 0.0  # also excludes i == j
    dz_eff = xp.maximum(dz, params.prop_radius_m)
    beta = b1 * dz_eff + b0
    mag = alpha * (params.prop_radius_m / (4.0 * dz_eff)) ** 2
    mag = xp.minimum(mag, params.mass_kg * params.gravity_mps2)  # momentum bound, see above
    mag = mag * xp.exp(-0.5 * d_xy2 / xp.maximum(beta * beta, 1e-12))
    fz = -xp.sum(xp.where(above, mag, 0.0), axis=-1)
    zeros = xp.zeros_like(fz)
    return xp.stack([zeros, zeros, fz], axis=-1)


def wrench(state: QuadState, params: cf.QuadParams, aero: Aero = AERO_OFF, xp=np):
    """Force and torque acting on each drone in ``state``.

    Returns:
        World-frame force [N] ``[n, 3]`` (gravity included) and body-frame torque [N m]
        ``[n, 3]`` about the centre of mass.
    """
    rot = math3d.quat_to_matrix(state.quat, xp)  # [n, 3, 3] body -> world
    thrust = state.thrust
    if aero.ground_effect:
        thrust = thrust + ground_effect_thrust(state.pos, rot, thrust, params, xp)
    alloc = cf.allocation_matrix(params, xp).astype(thrust.dtype)  # [4, 4]
    ft = thrust @ alloc.T  # [n, 4]: collective, tau_x, tau_y, tau_z
    zeros = xp.zeros_like(ft[:, 0])
    f_body = xp.stack([zeros, zeros, ft[:, 0]], axis=-1)
    if aero.drag:
        v_body = xp.einsum("nji,nj->ni", rot, state.vel)
        spin = xp.sum(rotor_speeds(state.thrust, params, xp), axis=-1, keepdims=True)
        f_body = f_body - params.drag_coeff * spin * v_body
    force = xp.einsum("nij,nj->ni", rot, f_body)
    gravity = xp.stack([zeros, zeros, -params.mass_kg * params.gravity_mps2 + zeros], axis=-1)
    force = force + gravity
    if aero.downwash:
        force = force + downwash_forces(state.pos, params, xp)
    return force, ft[:, 1:]


def step(
    state: QuadState,
    action,
    params: cf.QuadParams,
    dt: float,
    aero: Aero = AERO_OFF,
    xp=np,
) -> QuadState:
    """Advance ``n`` quadrotors by ``dt`` [s].

    Args:
        state: current state (``n`` drones).
        action: ``[n, 4]`` commanded rotor thrusts [N], M1..M4; clipped to
            ``[0, thrust_max_n]``.
        params: physical parameters (scalar leaves; vmap for per-drone or per-env values).
        dt: step [s].
        aero: which aerodynamic effects to include (static).
        xp: ``numpy`` or ``jax.numpy``.

    Returns:
        The state after ``dt``.
    """
    force, torque = wrench(state, params, aero, xp)
    inertia = params.inertia_kgm2
    w = state.omega
    gyro = xp.cross(w, inertia * w)
    acc = force / params.mass_kg
    ang_acc = (torque - gyro) / inertia
    vel = state.vel + acc * dt
    omega = w + ang_acc * dt
    pos = state.pos + vel * dt
    quat = math3d.quat_integrate(state.quat, omega, dt, xp)
    cmd = xp.clip(action, 0.0, params.thrust_max_n)
    decay = xp.exp(-dt / params.motor_tau_s)
    thrust = cmd + (state.thrust - cmd) * decay
    return QuadState(pos=pos, vel=vel, quat=quat, omega=omega, thrust=thrust)


def mix(collective, torque, params: cf.QuadParams, xp=np):
    """Rotor thrusts [N] ``[n, 4]`` for a collective thrust and a body torque (inverse mixing).

    Args:
        collective: ``[n]`` collective thrust [N].
        torque: ``[n, 3]`` body torque [N m].
        params: quadrotor parameters.
        xp: ``numpy`` or ``jax.numpy``.

    Returns:
        Rotor thrusts clipped to ``[0, thrust_max_n]``.
    """
    alloc_inv = xp.linalg.inv(cf.allocation_matrix(params, xp))
    wrench_ = xp.concatenate([collective[:, None], torque], axis=-1)
    return xp.clip(wrench_ @ alloc_inv.T, 0.0, params.thrust_max_n)
