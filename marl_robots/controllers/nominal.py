"""Nominal (performance) controllers: saturated go-to-goal and the unicycle point mapping.

The go-to-goal command for a control point ``p`` with goal ``g`` is
``sat(k (g - p), v_max) + bias``, where the optional *right-hand bias* is a velocity of
``bias * v_max`` perpendicular to the goal direction (to the right, clockwise seen from above),
faded in near other robots or obstacles and out near the goal.  Symmetric swaps (antipodal)
otherwise deadlock under a CBF filter: the bias turns a head-on standoff into a roundabout.
``make_way`` adds a small step-aside push away from neighbours closing in on a robot's safety
disc, so that robots parked on their goals let others through.
"""

from __future__ import annotations

import math

import numpy as np


def go_to_goal(points, goal, gain, v_max, bias=0.0, clearance=None, bias_radius=0.3, xp=np):
    """Saturated proportional go-to-goal velocity with an optional right-hand bias.

    Args:
        points: [..., 2] control-point positions [m].
        goal: [..., 2] goals [m].
        gain: proportional gain [1/s].
        v_max: speed cap [m/s].
        bias: right-hand bias as a fraction of ``v_max`` (0 disables).
        clearance: [...] distance to the nearest constraint boundary (another robot's safety
            disc or an obstacle) [m]; needed when ``bias > 0``.
        bias_radius: the bias fades in linearly as ``clearance`` drops below this [m].
        xp: array namespace.

    Returns:
        [..., 2] commanded velocity [m/s], |u| <= v_max.
    """
    err = goal - points
    dist = xp.sqrt(xp.sum(err * err, axis=-1))
    u = gain * err
    speed = xp.sqrt(xp.sum(u * u, axis=-1))
    u = u * xp.where(speed > v_max, v_max / xp.maximum(speed, 1e-12), 1.0)[..., None]
    if bias:
        direction = err / xp.maximum(dist, 1e-9)[..., None]
        right = xp.stack([direction[..., 1], -direction[..., 0]], axis=-1)
        near = xp.clip(1.0 - clearance / bias_radius, 0.0, 1.0)
        fade = xp.clip(dist / 0.3, 0.0, 1.0)
        u = u + (bias * v_max * near * fade)[..., None] * right
        speed = xp.sqrt(xp.sum(u * u, axis=-1))
        u = u * xp.where(speed > v_max, v_max / xp.maximum(speed, 1e-12), 1.0)[..., None]
    return u


def lookahead_point(pos, yaw, lookahead, xp=np):
    """Point ``lookahead`` [m] ahead of the axle centre along the heading: [..., 2] [m]."""
    return pos + lookahead * xp.stack([xp.cos(yaw), xp.sin(yaw)], axis=-1)


def point_to_unicycle(u, yaw, lookahead, xp=np):
    """Map a look-ahead-point velocity [..., 2] [m/s] to unicycle (v [m/s], omega [rad/s]).

    The look-ahead point moves with ``R(yaw) (v, lookahead * omega)``, so this inverse is exact.
    """
    c, s = xp.cos(yaw), xp.sin(yaw)
    v = c * u[..., 0] + s * u[..., 1]
    omega = (-s * u[..., 0] + c * u[..., 1]) / lookahead
    return xp.stack([v, omega], axis=-1)


def unicycle_to_point(cmd, yaw, lookahead, xp=np):
    """Inverse of ``point_to_unicycle``: (v, omega) [..., 2] -> look-ahead velocity [m/s]."""
    c, s = xp.cos(yaw), xp.sin(yaw)
    v, w_l = cmd[..., 0], lookahead * cmd[..., 1]
    return xp.stack([c * v - s * w_l, s * v + c * w_l], axis=-1)


def make_way(points, nbr, nbr_mask, safety_distance, speed, radius=0.15, xp=np):
    """Velocity [..., 2] that steps aside from neighbours closing in on this robot's disc.

    Each neighbour within ``radius`` of the safety disc contributes a push of up to ``speed``
    along the line away from it, growing linearly as the gap closes.  A robot parked on its goal
    otherwise never moves, and a neighbour whose way it blocks deadlocks against it.

    Args:
        points: [..., 2] positions [m]; nbr: [..., k, 2] neighbour positions; nbr_mask: [..., k].
        safety_distance: centre distance kept by the filter [m].
        speed: largest push [m/s].
        radius: gap below which the push starts [m].
    """
    diff = points[..., None, :] - nbr
    dist = xp.sqrt(xp.sum(diff * diff, axis=-1))
    gap = dist - safety_distance
    weight = xp.where(nbr_mask, xp.clip(1.0 - gap / radius, 0.0, 1.0), 0.0)
    unit = diff / xp.maximum(dist, 1e-9)[..., None]
    return speed * xp.sum(weight[..., None] * unit, axis=-2)


def saturate(u, v_max, xp=np):
    """Scale velocities [..., 2] down to speed ``v_max`` where they exceed it."""
    speed = xp.sqrt(xp.sum(u * u, axis=-1))
    return u * xp.where(speed > v_max, v_max / xp.maximum(speed, 1e-12), 1.0)[..., None]


def cooperative_go_to_goal(
    points,
    goal,
    nbr,
    nbr_mask,
    obstacles,
    obstacle_mask,
    safety_distance,
    obstacle_margin,
    gain,
    v_max,
    bias,
    make_way_speed,
    make_way_radius,
    xp=np,
):
    """The nominal command used in simulation and onboard: go-to-goal, bias, make-way.

    One function so that the JAX closed loop, the NumPy baseline and the ROS node compute the
    same thing.

    Args:
        points: [..., 2] control points [m]; goal: [..., 2] goals [m].
        nbr: [..., k, 2] sensed neighbours' control points [m]; nbr_mask: [..., k].
        obstacles: [O, 3] (x, y, r) [m] (broadcast against ``points``); obstacle_mask: [O].
        safety_distance: filter distance between control points [m].
        obstacle_margin: clearance the filter keeps from obstacle surfaces [m].
        gain, v_max, bias: see ``go_to_goal``.
        make_way_speed, make_way_radius: step-aside speed (fraction of v_max) and gap [m],
            see ``make_way``; 0 disables.
        xp: array namespace.

    Returns:
        [..., 2] nominal control-point velocity [m/s].
    """
    gaps = xp.sqrt(xp.sum((points[..., None, :] - nbr) ** 2, axis=-1)) - safety_distance
    robot_clear = xp.min(xp.where(nbr_mask, gaps, xp.inf), axis=-1, initial=xp.inf)
    d_obs = xp.sqrt(xp.sum((points[..., None, :] - obstacles[..., :2]) ** 2, axis=-1))
    d_obs = d_obs - obstacles[..., 2] - obstacle_margin
    obs_clear = xp.min(xp.where(obstacle_mask, d_obs, xp.inf), axis=-1, initial=xp.inf)
    u = go_to_goal(points, goal, gain, v_max, bias, xp.minimum(robot_clear, obs_clear), xp=xp)
    if make_way_speed:
        push = make_way(
            points, nbr, nbr_mask, safety_distance, make_way_speed * v_max, make_way_radius, xp=xp
        )
        u = saturate(u + push, v_max, xp)
    return u


def cooperative_go_to_goal_one(
    goal,
    nbr,
    obstacles,
    safety_distance,
    obstacle_margin,
    gain,
    v_max,
    bias,
    make_way_speed,
    make_way_radius,
    bias_radius=0.3,
):
    """``cooperative_go_to_goal`` of one robot in plain Python floats, in its own frame.

    The onboard policy runs it once per control period, where NumPy's per-call overhead on
    arrays of a few elements costs more than the arithmetic; ``tests/test_nominal.py`` pins it
    to the array version.

    Args:
        goal: (x, y) goal relative to the robot's control point [m].
        nbr: sensed neighbours' (x, y) relative positions [m] (masked-out slots left out).
        obstacles: (x, y, r) of the sensed obstacles, centres relative to the robot [m].
        safety_distance, obstacle_margin, gain, v_max, bias, make_way_speed,
            make_way_radius, bias_radius: as ``cooperative_go_to_goal`` / ``go_to_goal``.

    Returns:
        (ux, uy) nominal control-point velocity [m/s].
    """
    gx, gy = float(goal[0]), float(goal[1])
    ux, uy = gain * gx, gain * gy
    ux, uy = _saturate_one(ux, uy, v_max)
    if bias:
        clear = math.inf
        for x, y in nbr:
            clear = min(clear, math.hypot(x, y) - safety_distance)
        for x, y, r in obstacles:
            clear = min(clear, math.hypot(x, y) - r - obstacle_margin)
        dist = math.hypot(gx, gy)
        scale = 1.0 / max(dist, 1e-9)
        near = min(max(1.0 - clear / bias_radius, 0.0), 1.0)
        fade = min(max(dist / 0.3, 0.0), 1.0)
        push = bias * v_max * near * fade
        ux, uy = _saturate_one(ux + push * gy * scale, uy - push * gx * scale, v_max)
    if make_way_speed:
        speed = make_way_speed * v_max
        px = py = 0.0
        for x, y in nbr:
            dist = math.hypot(x, y)
            weight = min(max(1.0 - (dist - safety_distance) / make_way_radius, 0.0), 1.0)
            px -= weight * x / max(dist, 1e-9)
            py -= weight * y / max(dist, 1e-9)
        ux, uy = _saturate_one(ux + speed * px, uy + speed * py, v_max)
    return ux, uy


def _saturate_one(ux: float, uy: float, v_max: float) -> tuple[float, float]:
    speed = math.hypot(ux, uy)
    if speed > v_max:
        ux, uy = ux * (v_max / max(speed, 1e-12)), uy * (v_max / max(speed, 1e-12))
    return ux, uy
