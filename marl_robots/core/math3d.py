"""Rotation helpers with the project's one quaternion convention.

Convention (declared once, here): quaternions are ``(x, y, z, w)``, scalar last, Hamilton
product, active rotations, matching ROS ``geometry_msgs/Quaternion``.  Angles in radians,
REP-103 frames (x forward, y left, z up).
"""

from __future__ import annotations

import math

import numpy as np


def wrap_angle(angle):
    """Wrap an angle (or array of angles) to [-pi, pi) [rad]."""
    wrapped = (np.asarray(angle) + math.pi) % (2.0 * math.pi) - math.pi
    # The modulo of a tiny negative number rounds up to 2 pi, which would give +pi.
    return wrapped - 2.0 * math.pi * (wrapped >= math.pi).astype(wrapped.dtype)


def yaw_to_quat(yaw: float) -> tuple[float, float, float, float]:
    """Return the (x, y, z, w) quaternion of a rotation by ``yaw`` [rad] about +z."""
    half = 0.5 * float(yaw)
    return (0.0, 0.0, math.sin(half), math.cos(half))


def quat_to_yaw(x, y, z, w):
    """Return the yaw [rad] (rotation about +z) of an (x, y, z, w) quaternion.

    Floats or equally shaped NumPy arrays (then elementwise).
    """
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


# ---------------------------------------------------------------------------- array quaternions
# The functions below take ``xp`` (``numpy`` or ``jax.numpy``) and work on batches: quaternions
# ``[..., 4]`` as (x, y, z, w), vectors ``[..., 3]``.  They are what the quadrotor models use.


def quat_multiply(q, r, xp=np):
    """Hamilton product ``q r`` of (x, y, z, w) quaternions ``[..., 4]``."""
    qx, qy, qz, qw = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rx, ry, rz, rw = r[..., 0], r[..., 1], r[..., 2], r[..., 3]
    return xp.stack(
        [
            qw * rx + qx * rw + qy * rz - qz * ry,
            qw * ry - qx * rz + qy * rw + qz * rx,
            qw * rz + qx * ry - qy * rx + qz * rw,
            qw * rw - qx * rx - qy * ry - qz * rz,
        ],
        axis=-1,
    )


def quat_to_matrix(q, xp=np):
    """Rotation matrices ``[..., 3, 3]`` of unit (x, y, z, w) quaternions (body -> world)."""
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def quat_rotate(q, v, xp=np):
    """Rotate vectors ``v [..., 3]`` by unit quaternions ``q [..., 4]`` (body -> world)."""
    u, w = q[..., :3], q[..., 3:4]
    t = 2.0 * xp.cross(u, v)
    return v + w * t + xp.cross(u, t)


def quat_integrate(q, omega_body, dt, xp=np):
    """Advance orientations by a constant body-frame angular velocity over ``dt``.

    ``q exp(omega dt / 2)`` with ``omega_body [..., 3]`` [rad/s] and ``dt`` [s], renormalised.
    This is MuJoCo's ``mju_quatIntegrate``, so the JAX and MuJoCo backends integrate attitude
    identically.
    """
    # sqrt through a double where: the gradient of a norm at 0 is 0/0 (NaN) otherwise.
    sq = xp.sum(omega_body * omega_body, axis=-1, keepdims=True)
    nonzero = sq > 1e-30
    angle = xp.where(nonzero, xp.sqrt(xp.where(nonzero, sq, 1.0)), 0.0) * dt
    half = 0.5 * angle
    small = angle < 1e-12
    # sin(a/2)/a -> 1/2 as a -> 0 (avoid 0/0 under jit and grad).
    scale = xp.where(small, 0.5 * dt, xp.sin(half) / xp.where(small, 1.0, angle) * dt)
    dq = xp.concatenate([omega_body * scale, xp.cos(half)], axis=-1)
    out = quat_multiply(q, dq, xp)
    return out / xp.linalg.norm(out, axis=-1, keepdims=True)


def quat_from_matrix(m, xp=np):
    """Unit (x, y, z, w) quaternions (w >= 0) of rotation matrices ``[..., 3, 3]``.

    Shepperd's method with the branch chosen by the largest of (trace, diagonal) so that it is
    accurate everywhere; every branch is evaluated and selected (jit-friendly).
    """
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    tr = m00 + m11 + m22
    cands = [
        (
            m[..., 2, 1] - m[..., 1, 2],
            m[..., 0, 2] - m[..., 2, 0],
            m[..., 1, 0] - m[..., 0, 1],
            1 + tr,
        ),
        (
            1 + m00 - m11 - m22,
            m[..., 0, 1] + m[..., 1, 0],
            m[..., 0, 2] + m[..., 2, 0],
            m[..., 2, 1] - m[..., 1, 2],
        ),
        (
            m[..., 0, 1] + m[..., 1, 0],
            1 - m00 + m11 - m22,
            m[..., 1, 2] + m[..., 2, 1],
            m[..., 0, 2] - m[..., 2, 0],
        ),
        (
            m[..., 0, 2] + m[..., 2, 0],
            m[..., 1, 2] + m[..., 2, 1],
            1 - m00 - m11 + m22,
            m[..., 1, 0] - m[..., 0, 1],
        ),
    ]
    quats = xp.stack([xp.stack(c, axis=-1) for c in cands], axis=-2)  # [..., 4, 4]
    which = xp.argmax(xp.stack([tr, m00, m11, m22], axis=-1), axis=-1)
    q = xp.take_along_axis(quats, which[..., None, None], axis=-2)[..., 0, :]
    q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
    return q * xp.where(q[..., 3:4] < 0, -1.0, 1.0)
