"""Start/goal/obstacle layouts for the navigation task, looked up by name in ``SCENARIOS``.

Each scenario is ``fn(key, n, arena, max_obstacles) -> Layout`` with static ``n`` and
``max_obstacles``; it is jit-able and deterministic for a given key.  Coordinates are metres in
the arena frame (origin at the centre, x right, y up); headings face the goal.  Layouts keep at
least ``MIN_SPACING_M`` between robot centres so every start is safe for the default filter.

* ``antipodal`` - robots on an ellipse filling the arena swap to the opposite point; teams
  larger than one ellipse holds fill concentric ellipses inwards.
* ``random`` - starts and goals in random cells of a jittered grid, three random obstacles.
* ``corridor`` - two groups swap sides through a 0.35 m gap between two large obstacles.
* ``crossing`` - one group crosses left to right while the other crosses bottom to top.

A scenario that cannot place ``n`` robots ``MIN_SPACING_M`` apart raises ``ValueError``.
Whether a layout also holds the filter's actual margins (which depend on the robot model and
the safety distance) is checked by ``NavigationTask.check_layout``, which names the largest
team that fits.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.core.registry import Registry

#: Smallest centre distance between robots at the start and between goals [m].
MIN_SPACING_M = 0.22
#: Grid spacing of the dense block layouts used by teams too large for the 0.25 m grid [m].
DENSE_SPACING_M = 0.23
#: Shrink of the semi-axes from one antipodal ellipse to the next one inwards [m].
RING_STEP_M = 0.25
SCENARIOS = Registry("scenario")


class Layout(NamedTuple):
    """Initial layout: pos [n, 2], yaw [n], goal [n, 2], obstacles [O, 3], obstacle_mask [O]."""

    pos: jax.Array
    yaw: jax.Array
    goal: jax.Array
    obstacles: jax.Array
    obstacle_mask: jax.Array


def _face(pos, goal):
    d = goal - pos
    return jnp.arctan2(d[:, 1], d[:, 0])


def _no_obstacles(max_obstacles):
    return jnp.zeros((max_obstacles, 3)), jnp.zeros((max_obstacles,), bool)


def _pad_obstacles(obs: np.ndarray, max_obstacles: int):
    if len(obs) > max_obstacles:
        raise ValueError(f"scenario needs {len(obs)} obstacles but max_obstacles={max_obstacles}")
    pad = np.zeros((max_obstacles, 3), np.float32)
    pad[: len(obs)] = obs
    mask = np.arange(max_obstacles) < len(obs)
    return jnp.asarray(pad), jnp.asarray(mask)


def _block(
    count: int, cols: int, x0: float, y_centre: float, spacing: float, rows: int | None = None
) -> np.ndarray:
    """``count`` points in a grid of ``cols`` columns starting at x0, centred on y_centre.

    With ``rows`` given, the grid is filled column by column (``rows`` per column) and centred
    on the rows it would have when full.
    """
    idx = np.arange(count)
    if rows is None:
        rows = -(-count // cols)
        x = x0 + spacing * (idx % cols)
        y = y_centre + spacing * (idx // cols - (rows - 1) / 2.0)
    else:
        x = x0 + spacing * (idx // rows)
        y = y_centre + spacing * (idx % rows - (rows - 1) / 2.0)
    return np.stack([x, y], axis=1).astype(np.float32)


def _ellipse_equal_arc(n: int, ax: float, ay: float) -> np.ndarray:
    """``n`` points spaced by equal arc length on an ellipse with semi-axes ax, ay [m]."""
    t = np.linspace(0.0, 2.0 * np.pi, 4097)
    xy = np.stack([ax * np.cos(t), ay * np.sin(t)], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    target = (np.arange(n) + 0.5) / n * arc[-1]
    theta = np.interp(target, arc, t)
    return np.stack([ax * np.cos(theta), ay * np.sin(theta)], axis=1).astype(np.float32)


@lru_cache(maxsize=256)
def _ring_capacity(ax: float, ay: float) -> int:
    """Most points an equal-arc ellipse (ax, ay) holds ``MIN_SPACING_M`` apart."""
    n = 1
    while n < 4096:
        pts = _ellipse_equal_arc(n + 1, ax, ay).astype(np.float64)
        d = np.sqrt(np.sum((pts[:, None] - pts[None]) ** 2, -1))
        if np.where(np.eye(n + 1, dtype=bool), np.inf, d).min() < MIN_SPACING_M:
            return n
        n += 1
    return n


def _antipodal_points(n: int, ax: float, ay: float) -> np.ndarray:
    """``n`` points on concentric ellipses, the outer one filled first (equal arc on each)."""
    rings = []
    left = n
    while left > 0:
        if min(ax, ay) < MIN_SPACING_M / 2:
            raise ValueError(
                f"antipodal scenario fits at most {n - left} robots in this arena, got {n}"
            )
        take = min(left, _ring_capacity(round(ax, 6), round(ay, 6)))
        rings.append(_ellipse_equal_arc(take, ax, ay))
        left -= take
        ax, ay = ax - RING_STEP_M, ay - RING_STEP_M
    return np.concatenate(rings)


def antipodal(key, n, arena, max_obstacles) -> Layout:
    """Robots equally spaced on an ellipse (1.4 m x 0.85 m in the default arena) swap ends.

    Up to 32 robots share the outer ellipse; more fill ellipses shrunk by ``RING_STEP_M``.
    """
    del key
    pos = jnp.asarray(_antipodal_points(n, 0.5 * arena[0] - 0.2, 0.5 * arena[1] - 0.15))
    goal = -pos
    obstacles, mask = _no_obstacles(max_obstacles)
    return Layout(pos, _face(pos, goal), goal, obstacles, mask)


def random(key, n, arena, max_obstacles) -> Layout:
    """Jittered grid cells (0.35 m) hold robots, goals and up to three 0.1 m obstacles."""
    cell, jitter = 0.35, 0.04
    cols = int((arena[0] - 0.2) // cell)
    rows = int((arena[1] - 0.2) // cell)
    n_obs = min(3, max_obstacles)
    if n + n_obs > cols * rows:
        raise ValueError(f"random scenario fits at most {cols * rows - n_obs} robots, got {n}")
    cx = (np.arange(cols) - (cols - 1) / 2.0) * cell
    cy = (np.arange(rows) - (rows - 1) / 2.0) * cell
    centres = jnp.asarray(np.stack(np.meshgrid(cx, cy), -1).reshape(-1, 2), jnp.float32)
    k_obs, k_start, k_goal, k_js, k_jg = jax.random.split(key, 5)
    obs_cells = jax.random.permutation(k_obs, centres.shape[0])[:n_obs]
    blocked = jnp.zeros(centres.shape[0], bool).at[obs_cells].set(True)

    def pick(k):
        score = jax.random.uniform(k, (centres.shape[0],)) + blocked * 2.0
        return jnp.argsort(score)[:n]

    start = centres[pick(k_start)] + jax.random.uniform(
        k_js, (n, 2), minval=-jitter, maxval=jitter
    )
    goal = centres[pick(k_goal)] + jax.random.uniform(k_jg, (n, 2), minval=-jitter, maxval=jitter)
    obstacles = jnp.zeros((max_obstacles, 3)).at[:n_obs, :2].set(centres[obs_cells])
    obstacles = obstacles.at[:n_obs, 2].set(0.1)
    mask = jnp.arange(max_obstacles) < n_obs
    return Layout(start, _face(start, goal), goal, obstacles, mask)


def _rows_and_spacing(count: int) -> tuple[int, float]:
    """Rows and spacing of a group's block: 4 rows 0.25 m apart up to 16 robots, else 8 dense."""
    return (4, 0.25) if count <= 16 else (8, DENSE_SPACING_M)


def corridor(key, n, arena, max_obstacles) -> Layout:
    """Two groups swap sides through a 0.35 m gap between two 0.45 m obstacles at x = 0.

    Each group stands in a block of 4 rows (up to 16 robots) or 8 dense rows (up to 32).
    """
    del key
    left_n, right_n = n - n // 2, n // 2
    rows, spacing = _rows_and_spacing(left_n)
    cols = max(1, -(-left_n // rows))
    if cols > 4:
        raise ValueError(f"corridor scenario fits at most 64 robots, got {n}")
    x0 = -0.5 * arena[0] + 0.15
    left = _block(left_n, cols, x0, 0.0, spacing, rows)
    right = _block(right_n, cols, x0, 0.0, spacing, rows) * np.array([-1.0, 1.0], np.float32)
    pos = jnp.asarray(np.concatenate([left, right]))
    goal = pos * jnp.array([-1.0, 1.0])
    obstacles, mask = _pad_obstacles(
        np.array([[0.0, 0.625, 0.45], [0.0, -0.625, 0.45]], np.float32), max_obstacles
    )
    return Layout(pos, _face(pos, goal), goal, obstacles, mask)


def crossing(key, n, arena, max_obstacles) -> Layout:
    """Group A crosses left to right through the centre while group B crosses upwards.

    Up to 32 robots: A in 4 rows, B in 4 columns, 0.25 m apart.  Larger teams: A in 8 dense
    rows of at most 4 columns, B in at most 5 dense columns (64 robots at most).
    """
    del key
    a_n, b_n = n - n // 2, n // 2
    x0 = -0.5 * arena[0] + 0.15
    y0 = -0.5 * arena[1] + 0.15
    if a_n <= 16:
        a_rows, spacing, b_cols, b_x0 = 4, 0.25, 4, -0.375
    else:
        a_rows, spacing, b_cols = 8, DENSE_SPACING_M, 5
        b_x0 = -0.5 * spacing * (b_cols - 1)
    a_cols = max(1, -(-a_n // a_rows))
    b_rows = -(-b_n // b_cols)
    if a_cols > 4 or (b_rows - 1) * spacing > arena[1] - 0.3:
        raise ValueError(f"crossing scenario fits at most 64 robots, got {n}")
    a = _block(a_n, a_cols, x0, 0.0, spacing, a_rows)
    a_goal = a + np.array([-2.0 * x0 - spacing * (a_cols - 1), 0.0], np.float32)
    b = _block(b_n, b_cols, b_x0, y0 + 0.5 * spacing * (b_rows - 1), spacing)
    b_goal = b + np.array([0.0, -2.0 * y0 - spacing * (b_rows - 1)], np.float32)
    pos = jnp.asarray(np.concatenate([a, b]))
    goal = jnp.asarray(np.concatenate([a_goal, b_goal]))
    obstacles, mask = _no_obstacles(max_obstacles)
    return Layout(pos, _face(pos, goal), goal, obstacles, mask)


SCENARIOS.register("antipodal", antipodal)
SCENARIOS.register("random", random)
SCENARIOS.register("corridor", corridor)
SCENARIOS.register("crossing", crossing)
