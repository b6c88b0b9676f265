"""Single integrator: ``p' = u`` with a speed cap; the control point is the robot centre."""

from __future__ import annotations

import numpy as np

from marl_robots.controllers.safety_filter import Limits


class SingleIntegrator:
    """Holonomic point robot.  Action: velocity (v_x, v_y) [m/s, world frame]."""

    name = "single_integrator"
    action_dim = 2

    @staticmethod
    def step(pos, yaw, action, params, dt, xp=np):
        """Advance positions [n, 2] by one period ``dt`` [s]; yaw follows the velocity."""
        speed = xp.sqrt(xp.sum(action * action, axis=-1))
        scale = xp.where(speed > params.v_max, params.v_max / xp.maximum(speed, 1e-12), 1.0)
        vel = action * scale[..., None]
        moving = speed > 1e-6
        new_yaw = xp.where(moving, xp.arctan2(vel[..., 1], vel[..., 0]), yaw)
        return pos + dt * vel, new_yaw

    @staticmethod
    def control_point(pos, yaw, params, xp=np):
        """The point the filter and the goal refer to [n, 2] [m]: the centre."""
        return pos

    @staticmethod
    def point_margin(params):
        """Extra clearance between control point and body [m]: none."""
        return 0.0 * params.diameter_m

    @staticmethod
    def step_margin(params, dt):
        """Gap between one period's motion and ``p + u dt`` [m]: none (it moves in a line)."""
        return 0.0 * params.diameter_m * dt

    @staticmethod
    def from_point_velocity(u, yaw, params, xp=np):
        """Action that moves the control point with velocity ``u`` [n, 2]."""
        return u

    @staticmethod
    def to_point_velocity(action, yaw, params, xp=np):
        """Control-point velocity [n, 2] produced by ``action``."""
        return action

    @staticmethod
    def limits(yaw, params, xp=np) -> Limits:
        """Velocity limits on the control point: |u| <= v_max (a box plus a speed cap)."""
        n = yaw.shape[0]
        half = xp.full((n, 2), params.v_max, dtype=yaw.dtype)
        return Limits(half, xp.zeros_like(yaw), xp.full((n,), params.v_max, dtype=yaw.dtype))

    @staticmethod
    def body_rows(pos, yaw, points, index, mask, cbf_params, class_k, dt, params, xp=np):
        """No extra rows: the body centre is the control point."""
        return None
