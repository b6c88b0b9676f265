"""Shared vocabulary of the quadrotor flight controllers: setpoints, references and gains.

Gains are content (``controllers/quadrotor/crazyflie2.yaml``), loaded strictly.

All functions take ``xp`` (``numpy`` or ``jax.numpy``) so the same controller runs inside a
jitted JAX rollout and next to the CPU simulators.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from marl_robots.core.config import load_config
from marl_robots.core.paths import content_path

GAINS_PARTS = ("controllers", "quadrotor", "crazyflie2.yaml")
Vec3 = tuple[float, float, float]


class Setpoint(NamedTuple):
    """Desired flat outputs of ``n`` drones (world frame, ENU).

    Attributes:
        pos: ``[n, 3]`` position [m].
        vel: ``[n, 3]`` velocity [m/s] (feed-forward).
        acc: ``[n, 3]`` acceleration [m/s^2] (feed-forward).
        yaw: ``[n]`` heading [rad].
    """

    pos: object
    vel: object
    acc: object
    yaw: object


@dataclasses.dataclass(frozen=True)
class GeometricGains:
    """Gains of the SE(3) controller (see the YAML for units)."""

    k_x: Vec3
    k_v: Vec3
    k_r: Vec3
    k_omega: Vec3


@dataclasses.dataclass(frozen=True)
class PidGains:
    """Gains and limits of the cascaded PID controller (see the YAML for units)."""

    pos_p: Vec3
    vel_max_mps: float
    vel_p: Vec3
    vel_i: Vec3
    vel_i_limit: Vec3
    tilt_max_rad: float
    att_p: Vec3
    rate_max_radps: Vec3
    rate_p: Vec3
    rate_i: Vec3
    rate_i_limit: Vec3


@dataclasses.dataclass(frozen=True)
class RateGains:
    """Gains of the low-level body-rate controller."""

    rate_p: Vec3


_SECTIONS = {"geometric": GeometricGains, "pid": PidGains, "rate": RateGains}


def load_gains(controller: str, path=None):
    """Gains of ``controller`` (``geometric``, ``pid`` or ``rate``) from the gains file.

    Args:
        controller: section name.
        path: a gains YAML; default the shipped ``controllers/quadrotor/crazyflie2.yaml``.
    """
    if controller not in _SECTIONS:
        known = ", ".join(sorted(_SECTIONS))
        raise KeyError(f"unknown controller {controller!r}; known controllers: {known}")
    return load_config(_SECTIONS[controller], path or content_path(*GAINS_PARTS), controller)


def hover_setpoint(pos, xp=np) -> Setpoint:
    """Hold ``pos [n, 3]`` with zero yaw."""
    pos = xp.asarray(pos)
    zeros = xp.zeros_like(pos)
    return Setpoint(pos=pos, vel=zeros, acc=zeros, yaw=zeros[:, 0])


def figure_eight_frequency(radius_m: float, mean_speed_mps: float) -> float:
    """Angular frequency [rad/s] at which ``figure_eight`` has the given mean speed."""
    th = np.linspace(0.0, 2.0 * math.pi, 20001)
    speed = radius_m * np.sqrt(np.cos(th) ** 2 + np.cos(2.0 * th) ** 2)  # |dp/dtheta|
    length = float(np.trapezoid(speed, th))
    return mean_speed_mps * 2.0 * math.pi / length


def figure_eight(t, center, radius_m: float, omega_radps: float, xp=np) -> Setpoint:
    """A horizontal figure eight (lemniscate of Gerono) through ``center``, and its derivatives.

    ``p(t) = center + (A sin(w t), A sin(2 w t) / 2, 0)``.

    Args:
        t: time [s], scalar.
        center: ``[n, 3]`` centre of each drone's figure [m].
        radius_m: half width ``A`` [m].
        omega_radps: angular frequency ``w`` [rad/s] (``figure_eight_frequency``).
        xp: ``numpy`` or ``jax.numpy``.
    """
    a, w = radius_m, omega_radps
    s1, c1 = xp.sin(w * t), xp.cos(w * t)
    s2, c2 = xp.sin(2 * w * t), xp.cos(2 * w * t)
    z = 0.0 * s1
    offset = xp.stack([a * s1, 0.5 * a * s2, z])
    vel = xp.stack([a * w * c1, a * w * c2, z])
    acc = xp.stack([-a * w * w * s1, -2 * a * w * w * s2, z])
    center = xp.asarray(center)
    n = center.shape[0]
    return Setpoint(
        pos=center + offset,
        vel=xp.broadcast_to(vel, (n, 3)),
        acc=xp.broadcast_to(acc, (n, 3)),
        yaw=xp.zeros((n,), center.dtype),
    )


def vee(m, xp=np):
    """``[..., 3]`` vector of skew-symmetric matrices ``[..., 3, 3]``."""
    return xp.stack([m[..., 2, 1], m[..., 0, 2], m[..., 1, 0]], axis=-1)


def desired_rotation(force, yaw, xp=np):
    """Rotation ``[n, 3, 3]`` whose z axis is along ``force [n, 3]`` and whose heading is ``yaw``.

    ``b3 = f / |f|``, ``b2 = b3 x (cos yaw, sin yaw, 0)`` normalised, ``b1 = b2 x b3`` (Lee et al.
    2010).  A zero force points b3 up.
    """
    norm = xp.linalg.norm(force, axis=-1, keepdims=True)
    up = xp.zeros_like(force) + xp.asarray([0.0, 0.0, 1.0], dtype=force.dtype)
    b3 = xp.where(norm > 1e-9, force / xp.maximum(norm, 1e-9), up)
    zeros = xp.zeros_like(yaw)
    b1c = xp.stack([xp.cos(yaw), xp.sin(yaw), zeros], axis=-1)
    b2 = xp.cross(b3, b1c)
    b2 = b2 / xp.maximum(xp.linalg.norm(b2, axis=-1, keepdims=True), 1e-9)
    b1 = xp.cross(b2, b3)
    return xp.stack([b1, b2, b3], axis=-1)
