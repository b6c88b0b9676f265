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


def quat_to_yaw(x: float, y: float, z: float, w: float) -> float:
    """Return the yaw [rad] (rotation about +z) of an (x, y, z, w) quaternion."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
