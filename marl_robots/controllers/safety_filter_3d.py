"""3D CBF safety filter at acceleration level for quadrotor swarms (NumPy or JAX, batched).

Model the filter certifies against: each drone is a double integrator ``p'' = a`` whose input
``a`` [m/s^2, world frame, gravity excluded] is the acceleration its position/velocity loop
commands (the PID's velocity-loop output, or the geometric controller's ``-k_v e_v``).  The
filter replaces the nominal ``a_nom`` by the closest ``a`` (Euclidean) that satisfies, for every
barrier ``h`` of relative degree two, the exponential (high-order) CBF condition

    h'' + (k1 + k2) h' + k1 k2 h >= 0

which keeps ``h >= 0`` forward invariant for the double integrator when it holds at every
instant and ``h' + k1 h >= 0`` at the start (Nguyen & Sreenath 2016; Xiao & Belta 2019).

Barriers:
  * inter-drone: ``h_ij = d^T M d - 1`` with ``d = p_i - p_j`` and ``M = diag(1/R_xy^2,
    1/R_xy^2, 1/R_z^2)``, an ellipsoid stretched along z (downwash: stacked drones keep
    ``R_z`` apart, side-by-side ones ``R_xy``).  Reciprocal: each drone takes half of the pair
    condition (``2 d^T M a_i >= rhs / 2``), as in Wang, Ames & Egerstedt 2017;
  * spherical obstacles (centre ``c``, radius ``r``, static): ``h = |p - c|^2 / R^2 - 1`` with
    ``R = r + obstacle_clearance_m + buffer_m``, the same second-order condition, taken whole
    by the drone (the obstacle does not move);
  * floor, ceiling and the geofence (x, y walls): ``h = p_k - lo_k`` or ``hi_k - p_k``;
  * acceleration limits: a box ``|a_k| <= a_max,k`` (half-spaces).  Wall rows are axis-aligned
    too, so the two merge into one box per axis (``lo_k <= a_k <= hi_k``).

The radii the filter keeps are the safety ellipsoid's grown by ``buffer_m``: the real drone
tracks ``a`` through its attitude loop and motors (tens of ms of lag), which the double
integrator does not model; the buffer absorbs that tracking error.  That part is checked
empirically (the antipodal tests in every backend), not proven.

Each drone's QP has 3 variables and ``k + s + 6`` rows (``s`` spheres); it is solved exactly
(``qp_nd.project_enumerate``).  Fail closed: an infeasible QP (e.g. a wall row that needs more
than the acceleration limit) or a non-finite input gives the hover fallback (brake to zero
velocity within the acceleration limits) and a ``FilterStatus`` code, in the 2D filter's
``FilterInfo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from marl_robots.controllers.qp_nd import project_enumerate
from marl_robots.controllers.safety_filter import FilterInfo, FilterStatus

#: Feasibility tolerance of a unit-normal row in float32 [m/s^2] (float64: ``qp.FEAS_TOL``).
FEAS_TOL_F32 = 1e-4


@dataclass(frozen=True)
class SafetyEllipsoid:
    """The pairwise safety volume: centres closer than this ellipsoid is a violation.

    Attributes:
        horizontal_m: required centre-to-centre distance side by side [m].
        vertical_m: required distance one above the other [m] (> horizontal: downwash).
    """

    horizontal_m: float = 0.2
    vertical_m: float = 0.4

    def separation(self, diff, xp=np):
        """Separation [m] in the ellipsoid's metric: ``sqrt(dx^2 + dy^2 + (Rxy/Rz)^2 dz^2)``.

        Equal to ``horizontal_m`` on the ellipsoid's surface, so ``< horizontal_m`` is a
        violation.  ``diff``: ``[..., 3]`` position differences [m].
        """
        s = self.horizontal_m / self.vertical_m
        scale = xp.asarray([1.0, 1.0, s], dtype=diff.dtype)
        return xp.sqrt(xp.sum((diff * scale) ** 2, axis=-1))


@dataclass(frozen=True)
class Filter3DConfig:
    """Static configuration of the 3D filter (hashable).

    Attributes:
        ellipsoid: the safety volume that must never be entered.
        buffer_m: the filter keeps both radii grown by this [m] (tracking lag, see module).
        k1, k2: exponential-CBF gains [1/s] (poles of the barrier's second-order dynamics).
        acc_max_mps2: acceleration box (x, y, z) [m/s^2]; inside the PID's tilt cap.
        bounds_m: geofence (x_min, x_max, y_min, y_max, z_min, z_max) [m]; z_min is the floor.
        wall_margin_m: the filter keeps centres this far inside ``bounds_m`` [m].
        obstacle_clearance_m: a drone centre closer than this to a spherical obstacle's surface
            violates it [m] (the rotor tips reach 0.069 m); the filter keeps this plus
            ``buffer_m``.
        brake_gain: fallback ``a = -brake_gain v`` (clipped to the box) [1/s].
        neighbours: neighbour budget k (the nearest in the ellipsoid's metric).
    """

    ellipsoid: SafetyEllipsoid = SafetyEllipsoid()
    buffer_m: float = 0.05
    k1: float = 3.0
    k2: float = 3.0
    acc_max_mps2: tuple[float, float, float] = (2.5, 2.5, 3.0)
    bounds_m: tuple[float, ...] = (-2.5, 2.5, -2.5, 2.5, 0.0, 3.0)
    wall_margin_m: float = 0.2
    obstacle_clearance_m: float = 0.1
    brake_gain: float = 5.0
    neighbours: int = 7

    @property
    def radii_m(self) -> tuple[float, float]:
        """(horizontal, vertical) radii the filter keeps [m]: the ellipsoid plus the buffer."""
        e = self.ellipsoid
        return e.horizontal_m + self.buffer_m, e.vertical_m + self.buffer_m


class PairRows(NamedTuple):
    """Inter-drone rows ``G a <= b`` of each drone [n, k, 3], [n, k] and barrier values."""

    G: object
    b: object
    h: object


def pair_rows(pos, vel, index, mask, config: Filter3DConfig, xp=np) -> PairRows:
    """Reciprocal exponential-CBF rows on each drone's acceleration for its neighbours.

    Args:
        pos, vel: ``[..., n, 3]`` positions [m] and velocities [m/s].
        index, mask: ``[..., n, k]`` neighbour graph.
        config: filter configuration.
        xp: ``numpy`` or ``jax.numpy``.

    Returns:
        ``PairRows`` with ``G [..., n, k, 3]``, ``b [..., n, k]`` and ``h [..., n, k]`` (the
        barrier ``d^T M d - 1`` in the filter's radii; inf where masked).
    """
    r_xy, r_z = config.radii_m
    m_diag = xp.asarray([1 / r_xy**2, 1 / r_xy**2, 1 / r_z**2], dtype=pos.dtype)
    take = np.take_along_axis if xp is np else _take_jax
    nbr_p = take(pos[..., None, :, :], index[..., None], axis=-2)
    nbr_v = take(vel[..., None, :, :], index[..., None], axis=-2)
    d = pos[..., :, None, :] - nbr_p  # [..., n, k, 3]
    v = vel[..., :, None, :] - nbr_v
    G, b, h = _quadric_rows(d, v, m_diag, config, xp)
    # Reciprocal: the pair condition is on a_i - a_j; each drone takes half of it.
    return PairRows(G, 0.5 * b, xp.where(mask, h, xp.inf))


def sphere_rows(pos, vel, spheres, config: Filter3DConfig, xp=np) -> PairRows:
    """Exponential-CBF rows on each drone's acceleration for static spherical obstacles.

    Args:
        pos, vel: ``[..., n, 3]`` positions [m] and velocities [m/s].
        spheres: ``[..., s, 4]`` obstacles: centre (x, y, z) and radius [m].
        config: filter configuration (the kept radius is ``r + obstacle_clearance_m +
            buffer_m``).
        xp: ``numpy`` or ``jax.numpy``.

    Returns:
        ``PairRows`` with ``G [..., n, s, 3]``, ``b [..., n, s]`` and ``h [..., n, s]`` (the
        barrier ``|p - c|^2 / R^2 - 1``).
    """
    keep = spheres[..., 3] + config.obstacle_clearance_m + config.buffer_m  # [..., s]
    m = 1.0 / (keep * keep)
    d = pos[..., :, None, :] - spheres[..., None, :, :3]  # [..., n, s, 3]
    v = xp.broadcast_to(vel[..., :, None, :], d.shape)
    return PairRows(*_quadric_rows(d, v, m[..., None, :, None], config, xp))


def _quadric_rows(d, v, m, config: Filter3DConfig, xp):
    """Rows ``G a <= b`` of ``h'' + (k1 + k2) h' + k1 k2 h >= 0`` for ``h = d^T M d - 1``.

    ``d [..., 3]`` (``d'' = a``), ``v = d'`` and the diagonal ``m`` of ``M`` (broadcast).
    Returns ``(G [..., 3], b [...], h [...])``.
    """
    md = d * m
    h = xp.sum(d * md, axis=-1) - 1.0
    hd = 2.0 * xp.sum(md * v, axis=-1)
    vmv = xp.sum(v * v * m, axis=-1)
    k1, k2 = config.k1, config.k2
    rhs = -2.0 * vmv - (k1 + k2) * hd - k1 * k2 * h  # 2 d^T M a >= rhs
    return -2.0 * md, -rhs, h


def _take_jax(arr, idx, axis):
    import jax.numpy as jnp  # noqa: PLC0415 - only on the JAX path

    return jnp.take_along_axis(arr, idx, axis=axis)


def box_bounds(pos, vel, config: Filter3DConfig, xp=np):
    """Per-axis acceleration bounds from the walls and the acceleration box.

    Returns ``(lo, hi, h_walls)``: ``lo, hi [..., n, 3]`` [m/s^2] and the wall barriers
    ``[..., n, 6]`` (lower then upper, per axis) [m].
    """
    b = np.asarray(config.bounds_m, dtype=np.float64).reshape(3, 2)
    lower = xp.asarray(b[:, 0] + config.wall_margin_m, dtype=pos.dtype)
    upper = xp.asarray(b[:, 1] - config.wall_margin_m, dtype=pos.dtype)
    amax = xp.asarray(config.acc_max_mps2, dtype=pos.dtype)
    k1, k2 = config.k1, config.k2
    h_lo = pos - lower
    h_hi = upper - pos
    lo = xp.maximum(-amax, -(k1 + k2) * vel - k1 * k2 * h_lo)
    hi = xp.minimum(amax, -(k1 + k2) * vel + k1 * k2 * h_hi)
    return lo, hi, xp.concatenate([h_lo, h_hi], axis=-1)


def hover_fallback(vel, config: Filter3DConfig, xp=np):
    """Brake toward zero velocity: ``clip(-brake_gain v, -a_max, a_max)`` [..., n, 3]."""
    amax = xp.asarray(config.acc_max_mps2, dtype=vel.dtype)
    vel = xp.where(xp.isfinite(vel), vel, 0.0)
    return xp.clip(-config.brake_gain * vel, -amax, amax)


def filter_acceleration(pos, vel, a_nom, index, mask, config: Filter3DConfig, xp=np, spheres=None):
    """Filter each drone's nominal acceleration (decentralised, one 3-variable QP per drone).

    Args:
        pos, vel: ``[..., n, 3]`` positions [m] and velocities [m/s], world frame.
        a_nom: ``[..., n, 3]`` nominal commanded accelerations [m/s^2] (gravity excluded).
        index, mask: ``[..., n, k]`` neighbour graph (``neighbours_3d``).
        config: filter configuration.
        xp: ``numpy`` or ``jax.numpy``.
        spheres: ``[..., s, 4]`` static spherical obstacles (centre [m], radius [m]), or
            ``None`` (none).

    Returns:
        ``(a [..., n, 3], FilterInfo)``: the filtered accelerations and per-drone diagnostics
        (``barrier`` [..., n, k + s + 6]: pair barriers, sphere barriers, then walls;
        ``status`` ``FilterStatus``).
    """
    dtype = pos.dtype
    rows = pair_rows(pos, vel, index, mask, config, xp)
    if spheres is None:
        spheres = xp.zeros((0, 4), dtype=dtype)
    obst = sphere_rows(pos, vel, xp.asarray(spheres, dtype=dtype), config, xp)
    lo, hi, h_walls = box_bounds(pos, vel, config, xp)
    eye = xp.eye(3, dtype=dtype)
    shape = lo.shape[:-1] + (3, 3)
    G = xp.concatenate(
        [rows.G, obst.G, xp.broadcast_to(-eye, shape), xp.broadcast_to(eye, shape)], axis=-2
    )
    b = xp.concatenate([rows.b, obst.b, -lo, hi], axis=-1)
    present = xp.concatenate(
        [mask, xp.ones(obst.b.shape, dtype=bool), xp.ones(lo.shape[:-1] + (6,), dtype=bool)],
        axis=-1,
    )
    finite = (
        xp.all(xp.isfinite(pos), axis=-1)
        & xp.all(xp.isfinite(vel), axis=-1)
        & xp.all(xp.isfinite(a_nom), axis=-1)
    )
    nbr_finite = xp.all(xp.isfinite(rows.b) | ~mask, axis=-1)
    finite = finite & nbr_finite & xp.all(xp.isfinite(obst.b), axis=-1)
    G = xp.where(finite[..., None, None], G, 0.0)
    b = xp.where(finite[..., None], b, 1.0)
    a0 = xp.where(finite[..., None], a_nom, 0.0)
    tol = FEAS_TOL_F32 if np.dtype(dtype) == np.float32 else 1e-6
    sol = project_enumerate(G, b, a0, present, xp, feas_tol=tol)
    fallback = hover_fallback(vel, config, xp)
    ok = finite & sol.feasible
    a = xp.where(ok[..., None], sol.u, fallback)
    status = xp.where(
        finite,
        xp.where(sol.feasible, int(FilterStatus.OK), int(FilterStatus.INFEASIBLE)),
        int(FilterStatus.INVALID_INPUT),
    ).astype(np.int32)
    intervened = xp.any(a != a_nom, axis=-1)
    barrier = xp.concatenate([rows.h, obst.h, h_walls], axis=-1)
    info = FilterInfo(barrier, xp.zeros(status.shape, dtype), status, intervened)
    return a, info


def neighbours_3d(pos, config: Filter3DConfig):
    """Neighbour graph (JAX) of ``pos [n, 3]``, vmap it over episodes.

    The ``config.neighbours`` nearest drones in the filter ellipsoid's metric (no radius limit).
    """
    import jax.numpy as jnp  # noqa: PLC0415

    from marl_robots.core.graph import neighbour_graph  # noqa: PLC0415

    r_xy, r_z = config.radii_m
    scaled = pos * jnp.asarray([1.0, 1.0, r_xy / r_z], pos.dtype)
    graph = neighbour_graph(scaled, config.neighbours, jnp.inf)
    return graph.index, graph.mask


__all__ = [
    "Filter3DConfig",
    "PairRows",
    "SafetyEllipsoid",
    "box_bounds",
    "filter_acceleration",
    "hover_fallback",
    "neighbours_3d",
    "pair_rows",
    "sphere_rows",
]
