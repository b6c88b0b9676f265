"""One layout check for ground robots, used by scenarios, the env's reset, the CLI and fleets.

A layout keeps its promise when every barrier of the filter holds at the start and at the
goals, with the filter's *actual* margins: robot pairs keep ``d + 2 l + 2 delta`` between
control points (``d`` the safety distance between centres, ``l`` the control point's offset
from the body, ``delta`` the step margin below), obstacles ``radius + body radius + l + delta``
and walls ``body radius + l + delta``.  Then the body discs can never overlap while the
barriers hold (triangle inequality), and the filter needs no relaxation at the first step.

Why ``delta``: the filter's discrete-time clip (``controllers.cbf``) keeps ``h >= 0`` at the
straight-line prediction ``p + u dt`` of the control point, but a unicycle's control point
moves on an arc over a period, up to ``delta = robot.step_margin(params, dt)`` (0.48 mm at the
defaults) off that line.  Keeping the prediction ``delta`` farther out keeps the true point
outside ``l`` + body radius, so the *body* clears in discrete time; a step that ends inside
that last ``delta`` (the band) is asked back out within one period (``cbf.class_k``'s
``band``), so the next step keeps the promise too.
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
        pair: between two robots' control points (``2 step`` included: one per robot).
        obstacle: added to each obstacle's radius (``step`` included).
        wall: from each arena wall (``step`` included).
        step: the discrete-time part, ``robot.step_margin(params, dt)`` (see the module
            docstring); the filter takes it as ``CBFParams.step_margin``.
    """

    pair: float
    obstacle: float
    wall: float
    step: float


def filter_margins(
    robot, params, safety_distance_m: float = SAFETY_DISTANCE_M, dt_s: float = defaults.DT_S
) -> Margins:
    """The margins of the filter for ``robot`` (a model class or its registry name).

    Args:
        robot: robot model, or its name in ``ROBOTS``.
        params: ``GroundParams`` (floats or JAX scalars).
        safety_distance_m: least distance between robot centres [m].
        dt_s: control and integration period [s] (a command is held this long).
    """
    if isinstance(robot, str):
        robot = ROBOTS.get(robot)
    margin = robot.point_margin(params)
    step = robot.step_margin(params, dt_s)
    radius = 0.5 * params.diameter_m
    return Margins(
        safety_distance_m + 2.0 * (margin + step),
        radius + margin + step,
        radius + margin + step,
        step,
    )


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
    dt_s: float = defaults.DT_S,
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
        dt_s: control period [s] of the filter that will run the layout.

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
    m = filter_margins(robot, plain, safety_distance_m, dt_s)
    validate.check_layout(points, goals, obstacles, arena_bounds, m.pair, m.obstacle, m.wall, what)
