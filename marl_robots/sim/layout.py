"""One layout check for ground robots, used by scenarios, the env's reset, the CLI and fleets.

A layout keeps its promise when every barrier of the filter holds at the start and at the
goals, with the filter's *actual* margins: robot pairs keep ``d + 2 l`` between control points
(``d`` the safety distance between centres, ``l`` the control point's offset from the body),
obstacles ``radius + body radius + l`` and walls ``body radius + l``.  Then the body discs can
never overlap while the barriers hold (triangle inequality), and the filter needs no
relaxation at the first step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from marl_robots.core import defaults, validate
from marl_robots.sim.robots import ROBOTS

#: Default safety distance between robot centres [m] (``core.defaults``).
SAFETY_DISTANCE_M = defaults.SAFETY_DISTANCE_M


class Margins(NamedTuple):
    """Distances the filter keeps, all between control points [m].

    Attributes:
        pair: between two robots' control points.
        obstacle: added to each obstacle's radius.
        wall: from each arena wall.
    """

    pair: float
    obstacle: float
    wall: float


def filter_margins(robot, params, safety_distance_m: float = SAFETY_DISTANCE_M) -> Margins:
    """The margins of the filter for ``robot`` (a model class or its registry name).

    Args:
        robot: robot model, or its name in ``ROBOTS``.
        params: ``GroundParams`` (floats or JAX scalars).
        safety_distance_m: least distance between robot centres [m].
    """
    if isinstance(robot, str):
        robot = ROBOTS.get(robot)
    margin = robot.point_margin(params)
    radius = 0.5 * params.diameter_m
    return Margins(safety_distance_m + 2.0 * margin, radius + margin, radius + margin)


def check_ground_layout(
    robot,
    params,
    pos,
    yaw,
    goals,
    obstacles,
    arena_bounds,
    safety_distance_m: float = SAFETY_DISTANCE_M,
    what: str = "layout",
) -> None:
    """Check a ground-robot layout against the filter's margins (see the module docstring).

    Args:
        robot: robot model or registry name.
        params: ``GroundParams``.
        pos: [n, 2] body (axle) positions [m]; yaw: [n] headings [rad].
        goals: [n, 2] control-point goals [m].
        obstacles: [O, 3] real obstacles (x, y, radius) [m].
        arena_bounds: (x_min, x_max, y_min, y_max) [m].
        safety_distance_m: least distance between robot centres [m].
        what: the layout's name for messages.

    Raises:
        ValidationError: one line naming the first broken rule.
    """
    if isinstance(robot, str):
        robot = ROBOTS.get(robot)
    validate.safety_distance(safety_distance_m, float(params.diameter_m))
    pos = validate.finite(f"{what}: start positions", pos).reshape(-1, 2)
    yaw = validate.finite(f"{what}: start headings", yaw).reshape(-1)
    plain = type(params)(*(float(v) for v in params))
    points = robot.control_point(pos, yaw, plain, np)
    m = filter_margins(robot, plain, safety_distance_m)
    validate.check_layout(points, goals, obstacles, arena_bounds, m.pair, m.obstacle, m.wall, what)
