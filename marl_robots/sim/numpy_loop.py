"""Plain NumPy, one-environment-at-a-time closed loop: the benchmark baseline and parity twin.

This does the same work as ``closed_loop.control`` + ``NavigationTask.step`` (neighbour graph,
go-to-goal with bias, CBF filter, dynamics, separation metric) with NumPy arrays, one
environment and one step per Python call, the way a per-robot CPU simulator would.
"""

from __future__ import annotations

import numpy as np

from marl_robots.controllers import nominal
from marl_robots.controllers.safety_filter import CBFParams, World, filter_robots, pair_order
from marl_robots.core.graph import neighbour_graph_np
from marl_robots.sim.closed_loop import ControlConfig
from marl_robots.sim.tasks.navigation import NavigationTask


def _np(tree):
    return type(tree)(*(np.asarray(v) for v in tree))


def numpy_step(task: NavigationTask, cfg: ControlConfig, state: dict, params, cbf: CBFParams):
    """Advance one environment by one period.

    Args:
        state: dict with ``pos`` [n, 2], ``yaw`` [n], ``goal`` [n, 2], ``obstacles`` [O, 3],
            ``obstacle_mask`` [O] (NumPy arrays); updated copies are returned.
        params, cbf: NumPy-valued ``GroundParams`` and ``CBFParams`` (see ``_np``).

    Returns:
        ``(next_state, action [n, 2], status [n], min_separation_m)``.
    """
    robot = task.robot
    pos, yaw = state["pos"], state["yaw"]
    points = robot.control_point(pos, yaw, params, np)
    graph = neighbour_graph_np(points, cfg.neighbours, cfg.sensing_radius_m)
    u_nom = nominal.cooperative_go_to_goal(
        points, state["goal"], points[graph.index], graph.mask, state["obstacles"],
        state["obstacle_mask"], cbf.safety_distance, cbf.obstacle_margin, cfg.goal_gain,
        params.v_max, cfg.bias, cfg.make_way, cfg.make_way_radius_m, xp=np,
    )
    limits = robot.limits(yaw, params, np)
    status = np.zeros(task.n, np.int32)
    if cfg.filter is not None:
        world = World(
            state["obstacles"],
            state["obstacle_mask"],
            np.asarray(task.config.arena_bounds, points.dtype),
        )
        f = cfg.filter
        extra = robot.body_rows(
            pos, yaw, points, graph.index, graph.mask, cbf, f.class_k, f.dt_s, params, np
        )
        u, info = filter_robots(
            points, u_nom, points[graph.index], graph.mask, world, cbf, limits, f, np,
            pair_order(graph.index, np), extra,
        )
        status = info.status
    else:
        u = u_nom
    action = robot.from_point_velocity(u, yaw, params, np)
    new_pos, new_yaw = robot.step(pos, yaw, action, params, task.config.dt_s, np)
    diff = new_pos[:, None] - new_pos[None]
    dist = np.sqrt(np.sum(diff * diff, -1)) + np.eye(task.n) * 1e6
    nxt = dict(state, pos=new_pos.astype(pos.dtype), yaw=new_yaw.astype(yaw.dtype))
    return nxt, action, status, float(dist.min())


def to_numpy_inputs(state, params, cbf):
    """Convert a JAX ``NavState``, ``GroundParams`` and ``CBFParams`` to NumPy inputs."""
    s = {
        k: np.asarray(getattr(state, k))
        for k in ("pos", "yaw", "goal", "obstacles", "obstacle_mask")
    }
    return s, _np(params), _np(cbf)
