"""Unicycle (differential drive): ``x' = v cos th, y' = v sin th, th' = omega``.

Integrated exactly over a period for constant (v, omega) (arc of a circle).  The control point
is the look-ahead point ``l`` ahead of the axle, whose velocity ``R(th) (v, l omega)`` is fully
actuated, so single-integrator filters and controllers apply to it unchanged.
"""

from __future__ import annotations

import numpy as np

from marl_robots.controllers import cbf, nominal
from marl_robots.controllers.safety_filter import Limits


class Unicycle:
    """Differential-drive robot.  Action: (v [m/s], omega [rad/s]), body frame."""

    name = "unicycle"
    action_dim = 2

    @staticmethod
    def step(pos, yaw, action, params, dt, xp=np):
        """Advance poses by ``dt`` [s] with limits applied: positions [n, 2], yaw [n] [rad]."""
        v = xp.clip(action[..., 0], -params.v_max, params.v_max)
        w = xp.clip(action[..., 1], -params.omega_max, params.omega_max)
        dth = w * dt
        half = 0.5 * dth
        small = xp.abs(half) < 1e-6
        # Exact arc as its chord, v dt sin(dth/2) / (dth/2) along yaw + dth/2: the same as
        # v / w (sin(yaw + dth) - sin(yaw), ...) without that difference's cancellation, which
        # in float32 costs up to half a millimetre per step when the turn is slight.
        chord = v * dt * xp.where(small, 1.0, xp.sin(half) / xp.where(small, 1.0, half))
        dx = chord * xp.cos(yaw + half)
        dy = chord * xp.sin(yaw + half)
        new_yaw = (yaw + dth + np.pi) % (2 * np.pi) - np.pi
        return pos + xp.stack([dx, dy], axis=-1), new_yaw

    @staticmethod
    def control_point(pos, yaw, params, xp=np):
        """Look-ahead point [n, 2] [m]."""
        return nominal.lookahead_point(pos, yaw, params.lookahead_m, xp)

    @staticmethod
    def point_margin(params):
        """The body can be up to ``l`` from the control point [m]."""
        return params.lookahead_m

    @staticmethod
    def step_margin(params, dt):
        """Largest gap [m] between the control point after one period and ``p + u dt``.

        ``p + u dt`` is the straight-line prediction the filter's discrete-time clip assumes.
        With (v, omega) held for ``dt`` the point's velocity ``u`` keeps its length and turns at
        ``omega``: ``p(dt) - p - u dt = int_0^dt (R(omega t) - I) u dt`` and
        ``|R(omega t) - I| <= |omega| t``, so the gap is at most ``|u| |omega| dt^2 / 2``, largest
        at the corner of the limits box: ``|u| <= sqrt(v_max^2 + (l omega_max)^2)``,
        ``|omega| <= omega_max`` (0.48 mm at the defaults).  The exact arc of ``step`` attains
        it up to ``1 - sinc``-order terms.

        Args:
            params: ``GroundParams`` (floats or JAX scalars).
            dt: control and integration period [s].
        """
        u_max = (params.v_max**2 + (params.lookahead_m * params.omega_max) ** 2) ** 0.5
        return 0.5 * u_max * params.omega_max * dt * dt

    @staticmethod
    def from_point_velocity(u, yaw, params, xp=np):
        """(v, omega) [n, 2] that moves the look-ahead point with velocity ``u``."""
        return nominal.point_to_unicycle(u, yaw, params.lookahead_m, xp)

    @staticmethod
    def to_point_velocity(action, yaw, params, xp=np):
        """Look-ahead-point velocity [n, 2] of a (v, omega) action."""
        return nominal.unicycle_to_point(action, yaw, params.lookahead_m, xp)

    @staticmethod
    def limits(yaw, params, xp=np) -> Limits:
        """Body-frame box (v_max, l omega_max) on the look-ahead velocity; no extra speed cap."""
        n = yaw.shape[0]
        half = xp.stack(
            [
                xp.full((n,), params.v_max, dtype=yaw.dtype),
                xp.full((n,), params.lookahead_m * params.omega_max, dtype=yaw.dtype),
            ],
            axis=-1,
        )
        return Limits(half, yaw, xp.full((n,), xp.inf, dtype=yaw.dtype))

    @staticmethod
    def body_rows(pos, yaw, points, index, mask, cbf_params, class_k, dt, params, xp=np):
        """Axle-separation rows (``cbf.heading_rows``) for neighbours inside the pair margin.

        Present only for neighbours whose control points are closer than the filter's pair
        distance less its discrete-time part (``2 * cbf_params.step_margin``, the band a step
        may end in; see ``sim.layout.filter_margins``); absent for all others.

        Args:
            pos: [n, 2] axles [m]; yaw: [n] [rad]; points: [n, 2] control points [m].
            index, mask: [n, k] neighbour graph.
            cbf_params: ``CBFParams`` (its pair distance includes ``2 l`` and twice the step
                margin).
            class_k, dt: the filter's class-K function and period.

        Returns:
            ``cbf.Rows`` [n, k, ...].
        """
        diff = points[:, None, :] - points[index]
        pair = cbf_params.safety_distance - 2.0 * cbf_params.step_margin
        inside = mask & (xp.sum(diff * diff, -1) < pair**2)
        heading = xp.stack([xp.cos(yaw), xp.sin(yaw)], axis=-1)
        centres = pair - 2.0 * params.lookahead_m
        return cbf.heading_rows(
            pos, heading, pos[index], inside, centres, cbf_params.gamma, class_k, dt, 0.5, xp
        )
