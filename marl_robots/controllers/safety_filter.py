"""The CBF safety filter: one pure function used in simulation, training and onboard.

``safety_filter(points, u_nom, graph, world, params, limits, config)`` returns
``(u_safe, FilterInfo)`` for the n robots of one environment; ``jax.vmap`` it over
environments (``filter_robots`` also takes leading batch axes directly).  ``points`` are the
positions the barriers are written on (the robots themselves
for single integrators, the look-ahead points for unicycles) and ``u`` is their velocity.

Modes:
* ``decentralised`` - each robot solves its own 2-variable QP using only the neighbours in its
  padded neighbour list; pairwise constraints are shared half-half.  Solved exactly by
  ``qp.project_2d``.  This is what runs onboard.
* ``centralised`` - one QP over all robots' commands with each pairwise condition enforced once
  in full, solved by the interior-point method ``qp.solve_qp_dense``.

Failure handling (fail closed, never a NaN):
1. the QP is feasible -> status ``OK``;
2. otherwise the barrier rows get one shared slack ``s >= 0`` minimising
   ``|u - u_nom|^2 + relax_weight * s^2`` while actuator limits stay hard -> ``RELAXED``;
3. the relaxation did not converge -> brake (zero command), ``INFEASIBLE``;
4. non-finite inputs -> brake, ``INVALID_INPUT``.
Velocity limits are QP rows (a body-frame box) and, for single integrators, a speed cap applied
by uniform scaling, which keeps every satisfied barrier row with ``b >= 0`` satisfied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, NamedTuple

import numpy as np

from marl_robots.controllers import cbf, qp

FilterMode = Literal["decentralised", "centralised"]
FILTER_MODES: tuple[str, ...] = ("decentralised", "centralised")
#: Largest violation of a hard row accepted from the relaxed QP [m/s].
RELAX_TOL = 1e-4


class FilterStatus(IntEnum):
    """Outcome of one robot's filter call (published by the onboard node)."""

    OK = 0
    RELAXED = 1
    INFEASIBLE = 2
    INVALID_INPUT = 3


@dataclass(frozen=True)
class FilterConfig:
    """Static filter configuration (hashable: changing it recompiles).

    Attributes:
        mode: ``"decentralised"`` or ``"centralised"``.
        class_k: ``"linear"`` or ``"cubic"``.
        dt_s: control period [s] for the discrete-time clip of the class-K function (0: off).
        relax_weight: weight of the squared slack in the relaxed QP.
        relax_iters: interior-point iterations for the relaxed and centralised QPs.
        obstacle_rows: obstacles per robot that get a row, nearest first (sizes the QP).
    """

    mode: FilterMode = "decentralised"
    class_k: cbf.ClassK = "linear"
    dt_s: float = 0.0
    relax_weight: float = 1e6
    relax_iters: int = 30
    obstacle_rows: int = 2

    def __post_init__(self) -> None:
        if self.mode not in FILTER_MODES:
            raise ValueError(
                f"unknown filter mode {self.mode!r}; known: {', '.join(FILTER_MODES)}"
            )
        if self.class_k not in cbf.CLASS_K_NAMES:
            raise ValueError(
                f"unknown class-K function {self.class_k!r}; known: {', '.join(cbf.CLASS_K_NAMES)}"
            )
        if self.dt_s < 0 or self.relax_weight <= 0 or self.relax_iters < 1:
            raise ValueError("dt_s must be >= 0, relax_weight > 0 and relax_iters >= 1")
        if self.obstacle_rows < 0:
            raise ValueError(f"obstacle_rows must be >= 0, got {self.obstacle_rows}")


class CBFParams(NamedTuple):
    """Dynamic filter parameters (a pytree: vmap over it for randomisation or tuning).

    Attributes:
        gamma: [n] per-robot class-K gain (linear: [1/s]; cubic: [1/(s m^4)]).
        safety_distance: minimum centre distance between filter points [m].
        obstacle_margin: clearance added to obstacle radii [m].
        wall_margin: clearance kept from the arena walls [m].
    """

    gamma: object
    safety_distance: object
    obstacle_margin: object
    wall_margin: object


class Limits(NamedTuple):
    """Actuator limits on the filtered velocity.

    Attributes:
        half_width: [n, 2] body-frame box half-widths [m/s].
        yaw: [n] body yaw [rad] rotating the box (zeros for single integrators).
        speed_max: [n] cap on |u| [m/s] (``inf`` for none).
    """

    half_width: object
    yaw: object
    speed_max: object


class World(NamedTuple):
    """Static surroundings: obstacles [O, 3] (x, y, r) [m], mask [O], arena (x0, x1, y0, y1)."""

    obstacles: object
    obstacle_mask: object
    arena: object


class FilterInfo(NamedTuple):
    """Per-robot diagnostics of one filter call.

    Attributes:
        barrier: [n, m] barrier values of the robot, obstacle and wall rows (inf where absent).
        slack: [n] slack added to the barrier rows (0 unless ``RELAXED``).
        status: [n] int32 ``FilterStatus`` codes.
        intervened: [n] True where the output differs from the nominal command.
    """

    barrier: object
    slack: object
    status: object
    intervened: object


def _xp_name(xp) -> str:
    return getattr(xp, "__name__", "")


def _is_jax(xp) -> bool:
    return _xp_name(xp).startswith("jax")


def _enforce_limits(u, limits: Limits, xp):
    """Clip to the body-frame box, then cap the speed (no-ops for feasible QP solutions)."""
    c, s = xp.cos(limits.yaw), xp.sin(limits.yaw)
    ub = xp.stack([c * u[..., 0] + s * u[..., 1], -s * u[..., 0] + c * u[..., 1]], axis=-1)
    outside = xp.any(xp.abs(ub) > limits.half_width, axis=-1)
    ub = xp.clip(ub, -limits.half_width, limits.half_width)
    clipped = xp.stack([c * ub[..., 0] - s * ub[..., 1], s * ub[..., 0] + c * ub[..., 1]], -1)
    # Rotating there and back costs an ulp: only touch commands that were outside the box.
    u = xp.where(outside[..., None], clipped, u)
    speed = xp.sqrt(xp.sum(u * u, axis=-1))
    scale = xp.where(speed > limits.speed_max, limits.speed_max / xp.maximum(speed, 1e-12), 1.0)
    return u * scale[..., None]


def barrier_rows(points, nbr, nbr_mask, world: World, params: CBFParams, config, share, xp):
    """Stack the robot, obstacle and wall rows of each robot: ``Rows`` with [..., m, ...]."""
    kind, dt = config.class_k, config.dt_s
    rr = cbf.robot_rows(
        points, nbr, nbr_mask, params.safety_distance, params.gamma, kind, dt, share, xp
    )
    ob = cbf.obstacle_rows(
        points,
        world.obstacles,
        world.obstacle_mask,
        params.obstacle_margin,
        params.gamma,
        kind,
        dt,
        config.obstacle_rows,
        xp,
    )
    wl = cbf.wall_rows(points, world.arena, params.wall_margin, params.gamma, kind, dt, xp)
    return cbf.Rows(
        *(
            xp.concatenate(parts, axis=-2 if parts[0].ndim > rr.b.ndim else -1)
            for parts in zip(rr, ob, wl)
        )
    )


def _relaxed_one(A_soft, b_soft, A_hard, b_hard, u0, weight, iters, xp):
    """Minimal-violation QP for one robot: variables (u_x, u_y, s)."""
    ms, mh = A_soft.shape[0], A_hard.shape[0]
    dtype = u0.dtype
    P = xp.diag(xp.asarray([2.0, 2.0, 2.0 * weight], dtype=dtype))
    q = xp.concatenate([-2.0 * u0, xp.zeros(1, dtype=dtype)])
    G = xp.concatenate(
        [
            xp.concatenate([A_soft, -xp.ones((ms, 1), dtype=dtype)], axis=1),
            xp.concatenate([A_hard, xp.zeros((mh, 1), dtype=dtype)], axis=1),
            xp.asarray([[0.0, 0.0, -1.0]], dtype=dtype),
        ],
        axis=0,
    )
    h = xp.concatenate([b_soft, b_hard, xp.zeros(1, dtype=dtype)])
    # Absent rows (zero normals) carry a huge right-hand side that would swamp the duality
    # measure in float32; any positive value keeps them inactive.
    h = xp.where(xp.any(G != 0, axis=1), h, 1.0)
    res = qp.solve_qp_dense(P, q, G, h, xp=xp, iters=iters)
    ok = xp.all(xp.isfinite(res.x)) & (res.primal_residual <= RELAX_TOL)
    return res.x[:2], xp.maximum(res.x[2], 0.0), ok


def filter_robots(points, u_nom, nbr, nbr_mask, world, params, limits, config, xp=np):
    """Decentralised filter for a batch of robots given their neighbour positions.

    Args:
        points: [n, 2] filter-point positions [m].
        u_nom: [n, 2] nominal filter-point velocities [m/s].
        nbr: [n, k, 2] neighbour positions [m]; nbr_mask: [n, k].
        world, params, limits, config: see the classes above.
        xp: ``numpy`` or ``jax.numpy``.

    Returns:
        ``(u_safe [n, 2], FilterInfo)``.
    """
    dtype = points.dtype
    finite = (
        xp.all(xp.isfinite(points), axis=-1)
        & xp.all(xp.isfinite(u_nom), axis=-1)
        & xp.all(xp.isfinite(nbr) | ~nbr_mask[..., None], axis=(-2, -1))
        & xp.isfinite(params.gamma)
    )
    # Sanitize so that NaNs cannot leak into any branch (those robots brake below).
    points = xp.where(finite[..., None], points, 0.0)
    u_nom_s = xp.where(finite[..., None], u_nom, 0.0)
    nbr = xp.where(finite[..., None, None] & nbr_mask[..., None], nbr, 1e3)
    rows = barrier_rows(points, nbr, nbr_mask, world, params, config, 0.5, xp)
    box = cbf.box_rows(limits.yaw, limits.half_width, xp)
    A = xp.concatenate([rows.A, box.A], axis=-2)
    b = xp.concatenate([rows.b, box.b], axis=-1)
    sol = qp.project_2d(A, b, u_nom_s, xp)
    u, feasible = sol.u, sol.feasible
    slack = xp.zeros(feasible.shape, dtype=dtype)
    relaxed_ok = xp.zeros(feasible.shape, dtype=bool)

    def relax(A_s, b_s, A_h, b_h, u0):
        return _relaxed_one(A_s, b_s, A_h, b_h, u0, config.relax_weight, config.relax_iters, xp)

    if _is_jax(xp):
        import jax  # noqa: PLC0415 - only on the JAX path

        def run_relax(_):
            lead = feasible.shape  # any leading batch axes: flatten to one robot axis
            flat = [
                x.reshape((-1,) + x.shape[len(lead) :])
                for x in (rows.A, rows.b, box.A, box.b, u_nom_s)
            ]
            ur, sr, okr = jax.vmap(relax)(*flat)
            return ur.reshape(lead + (2,)), sr.reshape(lead), okr.reshape(lead)

        def skip(_):
            return u, slack, relaxed_ok

        ur, sr, okr = jax.lax.cond(xp.all(feasible), skip, run_relax, None)
    else:
        ur, sr, okr = np.array(u), np.array(slack), np.array(relaxed_ok)
        for i in np.flatnonzero(~np.asarray(feasible)):
            ur[i], sr[i], okr[i] = relax(rows.A[i], rows.b[i], box.A[i], box.b[i], u_nom_s[i])
    u = xp.where(feasible[..., None], u, ur)
    slack = xp.where(feasible, 0.0, sr).astype(dtype)
    status = xp.where(
        feasible, FilterStatus.OK, xp.where(okr, FilterStatus.RELAXED, FilterStatus.INFEASIBLE)
    )
    status = xp.where(finite, status, FilterStatus.INVALID_INPUT).astype(xp.int32)
    u = _enforce_limits(u, limits, xp)
    brake = (status >= FilterStatus.INFEASIBLE) | ~xp.all(xp.isfinite(u), axis=-1)
    u = xp.where(brake[..., None], 0.0, u)
    slack = xp.where(status == FilterStatus.RELAXED, slack, 0.0)
    intervened = xp.any(u != u_nom, axis=-1)
    return u, FilterInfo(rows.h, slack, status, intervened)


def centralised_filter(points, u_nom, world, params, limits, config, xp=np):
    """One QP over all robots: each pair's condition enforced once, in full.

    Args and returns as ``filter_robots``, without the neighbour lists (every pair is used).
    """
    n = points.shape[0]
    dtype = points.dtype
    finite = bool_all = xp.all(xp.isfinite(points)) & xp.all(xp.isfinite(u_nom))
    points = xp.where(bool_all, points, 0.0)
    u0 = xp.where(bool_all, u_nom, 0.0)
    pi, pj = np.triu_indices(n, k=1)
    diff = points[pi] - points[pj]
    h_pair = xp.sum(diff * diff, axis=-1) - params.safety_distance**2
    gamma_pair = xp.minimum(params.gamma[pi], params.gamma[pj])
    alpha = cbf.class_k(h_pair, gamma_pair, config.class_k, config.dt_s, xp)
    G_pair = xp.zeros((len(pi), n, 2), dtype=dtype)
    if _is_jax(xp):
        G_pair = G_pair.at[np.arange(len(pi)), pi].set(-2.0 * diff)
        G_pair = G_pair.at[np.arange(len(pi)), pj].set(2.0 * diff)
    else:
        G_pair[np.arange(len(pi)), pi] = -2.0 * diff
        G_pair[np.arange(len(pi)), pj] = 2.0 * diff
    # Per-robot rows (obstacles, walls, box), placed in each robot's block.
    no_nbr = xp.zeros((n, 0, 2), dtype=dtype)
    own = barrier_rows(
        points, no_nbr, xp.zeros((n, 0), dtype=bool), world, params, config, 1.0, xp
    )
    box = cbf.box_rows(limits.yaw, limits.half_width, xp)
    A_own = xp.concatenate([own.A, box.A], axis=-2)  # [n, r, 2]
    b_own = xp.concatenate([own.b, box.b], axis=-1)
    r = A_own.shape[1]
    eye = xp.eye(n, dtype=dtype)
    G_own = (eye[:, None, :, None] * A_own[:, :, None, :]).reshape(n * r, n * 2)
    G = xp.concatenate([G_pair.reshape(len(pi), 2 * n), G_own], axis=0)
    h = xp.concatenate([alpha, b_own.reshape(-1)])
    P = 2.0 * xp.eye(2 * n, dtype=dtype)
    res = qp.solve_qp_dense(P, -2.0 * u0.reshape(-1), G, h, xp=xp, iters=config.relax_iters * 2)
    u = res.x.reshape(n, 2)
    ok = xp.all(xp.isfinite(u)) & (res.primal_residual <= RELAX_TOL) & finite
    status = xp.where(
        ok, FilterStatus.OK, xp.where(finite, FilterStatus.INFEASIBLE, FilterStatus.INVALID_INPUT)
    )
    status = xp.broadcast_to(status, (n,)).astype(xp.int32)
    # An interior-point solution sits a hair inside the feasible set; snap back to the nominal
    # command where it was already safe so that "no intervention" is exact.
    feasible_nominal = xp.all(G @ u0.reshape(-1) <= h)
    u = xp.where(feasible_nominal, u0, u)
    u = _enforce_limits(u, limits, xp)
    u = xp.where((status >= FilterStatus.INFEASIBLE)[:, None], 0.0, u)
    pair_h = xp.full((n, n), xp.inf, dtype=dtype)
    if _is_jax(xp):
        pair_h = pair_h.at[pi, pj].set(h_pair).at[pj, pi].set(h_pair)
    else:
        pair_h[pi, pj] = h_pair
        pair_h[pj, pi] = h_pair
    barrier = xp.concatenate([pair_h, own.h], axis=-1)
    intervened = xp.any(u != u_nom, axis=-1)
    return u, FilterInfo(barrier, xp.zeros(n, dtype=dtype), status, intervened)


def gather_neighbours(points, index, xp=np):
    """Neighbour positions [n, k, 2] from a ``NeighbourGraph.index`` [n, k]."""
    return points[index]


def safety_filter(points, u_nom, graph, world, params, limits, config: FilterConfig, xp=None):
    """Filter the nominal commands of one environment's robots.

    Args:
        points: [n, 2] filter-point positions [m].
        u_nom: [n, 2] nominal velocities [m/s].
        graph: ``core.graph.NeighbourGraph`` (ignored by the centralised mode).
        world: ``World``; params: ``CBFParams``; limits: ``Limits``; config: ``FilterConfig``.
        xp: array namespace; defaults to ``jax.numpy``.

    Returns:
        ``(u_safe [n, 2], FilterInfo)``.
    """
    if xp is None:
        import jax.numpy as xp  # noqa: PLC0415
    if config.mode == "centralised":
        return centralised_filter(points, u_nom, world, params, limits, config, xp)
    nbr = gather_neighbours(points, graph.index, xp)
    return filter_robots(points, u_nom, nbr, graph.mask, world, params, limits, config, xp)
