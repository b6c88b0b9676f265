"""The env's observation, built onboard in NumPy (no JAX): ``sim.env.NavigationEnv.observe``.

A robot running a policy bundle builds its own observation row from what it senses: every
fleet robot's control point and its velocity, its own goal, the obstacles and the arena.  The
layout is ``sim.env.ObsLayout`` (listed field by field in the bundle's manifest); the values
equal the env's on the same state (``tests/test_bundle.py`` pins it on recorded states), in
float32 as the env computes them.

Neighbours are the ``k`` nearest control points within the sensing radius (ties by fleet
order, as ``core.graph.neighbour_graph``), padded and masked; obstacles the ``m`` nearest
surfaces (ties by obstacle order).
"""

from __future__ import annotations

import numpy as np


def observe(
    points: np.ndarray,
    vel: np.ndarray,
    goals: np.ndarray,
    obstacles: np.ndarray,
    obstacle_mask: np.ndarray,
    arena_bounds,
    neighbours: int,
    sensing_radius_m: float,
    obstacle_slots: int,
    rows=None,
) -> np.ndarray:
    """Observation rows [len(rows), obs_dim] (float32) of the robots ``rows`` (default all).

    Args:
        points: [n, d] control points of the whole fleet [m] (world frame).
        vel: [n, d] their velocities [m/s] (the env: last period's displacement / dt).
        goals: [n, d] goals of the control points [m] (only the ``rows`` ones are read).
        obstacles: [O, d + 1] circular obstacles (centre [m], radius [m]).
        obstacle_mask: [O] bool, real obstacles.
        arena_bounds: (x_min, x_max, y_min, y_max[, z_min, z_max]) [m].
        neighbours: neighbour budget k; sensing_radius_m: [m]; obstacle_slots: M.
        rows: indices of the robots to observe.
    """
    p = np.asarray(points, np.float32)
    v = np.asarray(vel, np.float32)
    n, d = p.shape
    rows = range(n) if rows is None else rows
    return np.stack(
        [
            _row(
                p,
                v,
                np.asarray(goals, np.float32),
                np.asarray(obstacles, np.float32),
                np.asarray(obstacle_mask, bool),
                arena_bounds,
                neighbours,
                sensing_radius_m,
                obstacle_slots,
                i,
            )
            for i in rows
        ]
    ).astype(np.float32)


def _row(p, v, goals, obst, omask, arena_bounds, k, radius, m, i) -> np.ndarray:
    n, d = p.shape
    pi = p[i]
    bounds = np.asarray(arena_bounds, np.float32).reshape(d, 2)
    walls = np.concatenate([pi - bounds[:, 0], bounds[:, 1] - pi])
    # Neighbours: k nearest within the radius, ties by fleet order, padded to k.
    diff = p - pi
    dist = np.sqrt(np.sum(diff * diff, axis=-1, dtype=np.float32)).astype(np.float32)
    dist[i] = np.inf
    have = max(min(k, n - 1), 0)
    order = np.argsort(dist, kind="stable")[:have]
    mask = dist[order] <= radius
    nbr = np.zeros((k, 2 * d + 1), np.float32)
    nbr[:have, :d] = np.where(mask[:, None], p[order] - pi, 0.0)
    nbr[:have, d : 2 * d] = np.where(mask[:, None], v[order] - v[i], 0.0)
    nbr[:have, 2 * d] = mask
    # Obstacles: m nearest surfaces, ties by obstacle order, absent ones zero.
    o_feat = np.zeros((m, d + 2), np.float32)
    if len(obst) and m:
        rel = obst[:, :d] - pi
        gap = np.sqrt(np.sum(rel * rel, axis=-1, dtype=np.float32)) - obst[:, d]
        gap = np.where(omask, gap, np.inf)
        keep = np.argsort(gap, kind="stable")[: min(m, len(obst))]
        present = omask[keep]
        feat = np.concatenate([rel[keep], obst[keep, d : d + 1], np.ones((len(keep), 1))], axis=-1)
        o_feat[: len(keep)] = np.where(present[:, None], feat, 0.0)
    parts = [goals[i] - pi, v[i], walls, nbr.reshape(-1), o_feat.reshape(-1)]
    return np.concatenate(parts).astype(np.float32)
