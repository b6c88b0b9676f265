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
2. otherwise (only possible when the robot is already inside some margin, ``h < 0``) each
   violated row gets its own slack, weighted, and may give down to "no deeper"
   (``dh/dt >= 0``), while every row with ``h >= 0`` and the actuator limits stay hard
   -> ``RELAXED``.  Braking satisfies that relaxed problem, so it always has a solution; a
   satisfied row is never loosened;
3. the solvers failed numerically -> brake (zero command), ``INFEASIBLE``;
4. non-finite inputs -> brake, ``INVALID_INPUT``.
A barrier row whose gradient vanishes (coincident points) gets a deterministic separating
direction (``cbf.separating_diff``) instead of disappearing.
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
#: JAX batches of more robots than this relax only the robots that need it, compacted into a
#: rounds of 1/RELAX_SPARSE_MIN of the batch (as many rounds as they need: ``qp.sparse_apply``).
RELAX_SPARSE_MIN = 256


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
        step_margin: the part of each margin (twice it of the pair distance) that covers the
            control point's deviation from a straight line over one period [m]
            (``sim.layout.filter_margins``); inside it the filter asks for a return to the
            full margin within one period (``cbf.class_k``).  0: none (a single integrator).
    """

    gamma: object
    safety_distance: object
    obstacle_margin: object
    wall_margin: object
    step_margin: object = 0.0


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


def barrier_rows(
    points, nbr, nbr_mask, world: World, params: CBFParams, config, share, xp, order=None
):
    """Stack the robot, obstacle and wall rows of each robot: ``Rows`` with [..., m, ...]."""
    kind, dt = config.class_k, config.dt_s
    step = params.step_margin
    rr = cbf.robot_rows(
        points, nbr, nbr_mask, params.safety_distance, params.gamma, kind, dt, share, xp, order,
        step,
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
        step,
    )
    wl = cbf.wall_rows(
        points, world.arena, params.wall_margin, params.gamma, kind, dt, xp, step
    )
    return concat_rows((rr, ob, wl), xp)


def concat_rows(parts, xp) -> cbf.Rows:
    """Concatenate ``Rows`` along the row axis."""
    return cbf.Rows(
        xp.concatenate([r.A for r in parts], axis=-2),
        xp.concatenate([r.b for r in parts], axis=-1),
        xp.concatenate([r.h for r in parts], axis=-1),
    )


def _normalised(A, b, xp):
    """Rows scaled to unit normals (so slack is in m/s); zero rows keep A = 0 and b."""
    norm = xp.sqrt(xp.sum(A * A, axis=-1))
    present = norm * norm > qp.ROW_EPS
    inv = xp.where(present, 1.0 / xp.where(present, norm, 1.0), 1.0)
    return A * inv[..., None], b * inv, present


def soft_rows(h, xp=np):
    """Rows the relaxation may loosen: those already violated (``h < 0``), and only those."""
    return h < 0


def slack_upper(b, soft, xp=np):
    """Largest loosening of each row: a soft row down to "no deeper" (``b' = 0``) [m/s]."""
    return xp.where(soft, xp.maximum(-b, 1e-6), 1.0)


def _relaxed_one(A, b, h, box_A, box_b, u0, weight, iters, xp):
    """Per-row minimal-violation projection of one robot's nominal command.

    Barrier rows with ``h < 0`` (the robot is inside that margin) are soft: each may be
    loosened by its own slack, down to "no deeper" (``b' <= 0``: ``dh/dt >= 0``); every row
    with ``h >= 0`` and the actuator box stay hard.  Because hard barrier rows have
    ``b = alpha(h) >= 0`` and the box holds 0, ``u = 0`` is always feasible.  The weighted
    slacks come from ``qp.solve_qp_soft``; the command is then the *exact* projection
    (``qp.project_2d``) onto the rows loosened by those slacks, so hard rows hold to the
    projection's tolerance; if that fails, onto the "no deeper" polygon, which holds 0.

    Returns:
        ``(u [2], largest slack [m/s], ok)``.
    """
    dtype = u0.dtype
    An, bn, _ = _normalised(A, b, xp)
    soft = soft_rows(h, xp)
    # A violated row may demand an outward speed far beyond the actuators (a robot deep
    # inside a margin): cap the demand at twice the largest reachable speed, which keeps the
    # same preferred direction and the slack on a scale float32 can handle.
    reach = 2.0 * xp.sqrt(xp.sum(box_b * box_b))
    bn = xp.where(soft, xp.maximum(bn, -reach), bn)
    Gm = xp.concatenate([An, box_A], axis=0)
    hm = xp.concatenate([bn, box_b], axis=0)
    soft_all = xp.concatenate([soft, xp.zeros(box_b.shape, dtype=bool)])
    upper = slack_upper(hm, soft_all, xp)
    w = xp.full(hm.shape, weight, dtype=dtype)
    P = 2.0 * xp.eye(2, dtype=dtype)
    res = qp.solve_qp_soft(P, -2.0 * u0, Gm, hm, soft_all, w, upper, xp=xp, iters=iters)
    x = xp.where(xp.all(xp.isfinite(res.x)), res.x, 0.0)
    viol = xp.clip(An @ x - bn, 0.0, xp.maximum(-bn, 0.0))
    loosened = bn + xp.where(soft, viol + 1e-6, 0.0)
    sol = qp.project_2d(Gm, xp.concatenate([loosened, box_b]), u0, xp)
    no_deeper = xp.concatenate([xp.where(soft, xp.maximum(bn, 0.0), bn), box_b])
    safe = qp.project_2d(Gm, no_deeper, u0, xp)
    u = xp.where(sol.feasible, sol.u, xp.where(safe.feasible, safe.u, 0.0))
    slack = xp.max(xp.where(soft, xp.maximum(An @ u - bn, 0.0), 0.0), initial=0.0)
    return u, slack.astype(dtype), sol.feasible | safe.feasible


def filter_robots(
    points,
    u_nom,
    nbr,
    nbr_mask,
    world,
    params,
    limits,
    config,
    xp=np,
    order=None,
    extra=None,
):
    """Decentralised filter for a batch of robots given their neighbour positions.

    Args:
        points: [n, 2] filter-point positions [m].
        u_nom: [n, 2] nominal filter-point velocities [m/s].
        nbr: [n, k, 2] neighbour positions [m]; nbr_mask: [n, k].
        world, params, limits, config: see the classes above.
        xp: ``numpy`` or ``jax.numpy``.
        order: [n, k] sign(id_i - id_j) of each neighbour pair, so that coincident robots
            part in opposite directions (``None``: they only stop approaching).
        extra: more barrier ``Rows`` [n, e, ...] written on the same velocity (for example
            ``cbf.heading_rows`` of unicycles), or ``None``.

    Returns:
        ``(u_safe [n, 2], FilterInfo)``.
    """
    prepared = decentralised_rows(
        points, u_nom, nbr, nbr_mask, world, params, limits, config, xp, order, extra
    )
    return decentralised_solve(u_nom, prepared, limits, config, xp)


class DecentralisedRows(NamedTuple):
    """``filter_robots``'s first phase: sanitised input and every robot's rows.

    Attributes:
        finite: [...] inputs finite; u_nom_s: [..., 2] nominal command, zero where not.
        rows: barrier ``cbf.Rows`` [..., m, ...]; box: actuator ``cbf.Rows`` [..., 4, ...].
        need: [...] bool, ``u_nom_s`` violates a barrier or box row (``qp.violated_rows``,
            the projection's own test), computed with the rows while they are in cache (JAX);
            ``None``: the projection tests it.
    """

    finite: object
    u_nom_s: object
    rows: cbf.Rows
    box: cbf.Rows
    need: object = None


def decentralised_rows(
    points, u_nom, nbr, nbr_mask, world, params, limits, config, xp=np, order=None, extra=None
) -> DecentralisedRows:
    """The rows of ``filter_robots`` (same arguments), without solving.

    Split from ``decentralised_solve`` so that a caller can build the rows in cache-sized
    chunks of robots and solve the whole batch at once (one compaction instead of one per
    chunk: ``closed_loop.control``).
    """
    finite = (
        xp.all(xp.isfinite(points), axis=-1)
        & xp.all(xp.isfinite(u_nom), axis=-1)
        & xp.all(xp.isfinite(nbr) | ~nbr_mask[..., None], axis=(-2, -1))
        & xp.isfinite(params.gamma)
    )
    if extra is not None:
        finite = finite & xp.all(xp.isfinite(extra.A), axis=(-2, -1))
        finite = finite & xp.all(xp.isfinite(extra.b) | (extra.b == cbf.INACTIVE_B), axis=-1)
    # Sanitize so that NaNs cannot leak into any branch (those robots brake below).
    points = xp.where(finite[..., None], points, 0.0)
    u_nom_s = xp.where(finite[..., None], u_nom, 0.0)
    nbr = xp.where(finite[..., None, None] & nbr_mask[..., None], nbr, 1e3)
    rows = barrier_rows(points, nbr, nbr_mask, world, params, config, 0.5, xp, order)
    if extra is not None:
        ok = finite[..., None]
        extra = cbf.Rows(
            xp.where(ok[..., None], extra.A, 0.0),
            xp.where(ok, extra.b, cbf.INACTIVE_B),
            xp.where(ok, extra.h, xp.inf),
        )
        rows = concat_rows((rows, extra), xp)
    box = cbf.box_rows(limits.yaw, limits.half_width, xp)
    need = None
    if _is_jax(xp):
        need = xp.any(qp.violated_rows(rows.A, rows.b, u_nom_s, xp), axis=-1) | xp.any(
            qp.violated_rows(box.A, box.b, u_nom_s, xp), axis=-1
        )
    return DecentralisedRows(finite, u_nom_s, rows, box, need)


def decentralised_solve(u_nom, prepared: DecentralisedRows, limits, config, xp=np):
    """``filter_robots``'s second phase: projection, relaxation, limits and status.

    Args:
        u_nom: [..., 2] nominal commands as given (``intervened`` compares with them).
        prepared: ``decentralised_rows`` of the same robots.
        limits, config, xp: as ``filter_robots``.

    Returns:
        ``(u_safe [..., 2], FilterInfo)``.
    """
    finite, u_nom_s, rows, box, need = prepared
    dtype = u_nom_s.dtype
    A = xp.concatenate([rows.A, box.A], axis=-2)
    b = xp.concatenate([rows.b, box.b], axis=-1)
    # The box lies in the disc of its circumradius: rows beyond it are implied (pruned on JAX).
    reach = xp.sqrt(xp.sum(limits.half_width * limits.half_width, axis=-1)) * (1.0 + 1e-5)
    sol = qp.project_2d(A, b, u_nom_s, xp, bound=reach, need=need)
    # A row whose normal vanished while it is violated cannot be met: that is not "OK".
    stuck = xp.any((xp.sum(rows.A * rows.A, axis=-1) <= qp.ROW_EPS) & (rows.b < 0), axis=-1)
    u, feasible = sol.u, sol.feasible & ~stuck
    slack = xp.zeros(feasible.shape, dtype=dtype)
    relaxed_ok = xp.zeros(feasible.shape, dtype=bool)

    def relax(A_r, b_r, h_r, A_b, b_b, u0):
        return _relaxed_one(
            A_r, b_r, h_r, A_b, b_b, u0, config.relax_weight, config.relax_iters, xp
        )

    if _is_jax(xp):
        import jax  # noqa: PLC0415 - only on the JAX path

        lead = feasible.shape  # any leading batch axes: flatten to one robot axis
        flat = [
            x.reshape((-1,) + x.shape[len(lead) :])
            for x in (rows.A, rows.b, rows.h, box.A, box.b, u_nom_s)
        ]
        total = flat[-1].shape[0]
        if total > RELAX_SPARSE_MIN:
            # A large batch: relax only the robots that need it, compacted (``sparse_apply``).
            out = qp.sparse_apply(
                lambda x: jax.vmap(relax)(*x),
                ~feasible.reshape(-1),
                flat,
                (u.reshape(-1, 2), slack.reshape(-1), relaxed_ok.reshape(-1)),
                qp._round_up(total / RELAX_SPARSE_MIN, 16),
            )
            ur, sr, okr = out[0].reshape(lead + (2,)), out[1].reshape(lead), out[2].reshape(lead)
        else:

            def run_relax(_):
                ur, sr, okr = jax.vmap(relax)(*flat)
                return ur.reshape(lead + (2,)), sr.reshape(lead), okr.reshape(lead)

            def skip(_):
                return u, slack, relaxed_ok

            ur, sr, okr = jax.lax.cond(xp.all(feasible), skip, run_relax, None)
    else:
        ur, sr, okr = np.array(u), np.array(slack), np.array(relaxed_ok)
        for i in np.flatnonzero(~np.asarray(feasible)):
            ur[i], sr[i], okr[i] = relax(
                rows.A[i], rows.b[i], rows.h[i], box.A[i], box.b[i], u_nom_s[i]
            )
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


def centralised_filter(points, u_nom, world, params, limits, config, xp=np, extra=None):
    """One QP over all robots: each pair's condition enforced once, in full.

    The relaxation has the decentralised filter's semantics: rows with ``h < 0`` are soft
    (each with its own slack, never past "no deeper"), all others hard; robots touching a
    loosened row get ``RELAXED``.  Braking is always feasible, so a solver failure brakes
    every robot (``INFEASIBLE``).

    Args and returns as ``filter_robots``, without the neighbour lists (every pair is used);
    ``extra`` rows are per robot ([n, e, ...]), as there.
    """
    n = points.shape[0]
    dtype = points.dtype
    if n == 0:
        empty = xp.zeros((0,), dtype=dtype)
        return xp.zeros((0, 2), dtype=dtype), FilterInfo(
            xp.zeros((0, 0), dtype=dtype), empty, xp.zeros((0,), xp.int32), empty.astype(bool)
        )
    finite = bool_all = (
        xp.all(xp.isfinite(points))
        & xp.all(xp.isfinite(u_nom))
        & xp.all(xp.isfinite(params.gamma))
    )
    points = xp.where(bool_all, points, 0.0)
    u0 = xp.where(bool_all, u_nom, 0.0)
    pi, pj = np.triu_indices(n, k=1)
    diff = points[pi] - points[pj]
    h_pair = xp.sum(diff * diff, axis=-1) - params.safety_distance**2
    gamma_pair = xp.minimum(params.gamma[pi], params.gamma[pj])
    band = cbf.quadratic_band(params.safety_distance, 2.0 * params.step_margin)
    alpha = cbf.class_k(h_pair, gamma_pair, config.class_k, config.dt_s, xp, band)
    # Coincident robots i < j part along -x / +x, as in the decentralised filter.
    diff = cbf.separating_diff(diff, -xp.ones(h_pair.shape, dtype=dtype), xp)
    G_pair = xp.zeros((len(pi), n, 2), dtype=dtype)
    if _is_jax(xp):
        G_pair = G_pair.at[np.arange(len(pi)), pi].set(-2.0 * diff)
        G_pair = G_pair.at[np.arange(len(pi)), pj].set(2.0 * diff)
    else:
        G_pair[np.arange(len(pi)), pi] = -2.0 * diff
        G_pair[np.arange(len(pi)), pj] = 2.0 * diff
    # Per-robot rows (obstacles, walls, extra, box), placed in each robot's block.
    no_nbr = xp.zeros((n, 0, 2), dtype=dtype)
    own = barrier_rows(
        points, no_nbr, xp.zeros((n, 0), dtype=bool), world, params, config, 1.0, xp
    )
    if extra is not None:
        own = concat_rows((own, extra), xp)
    box = cbf.box_rows(limits.yaw, limits.half_width, xp)
    A_own = xp.concatenate([own.A, box.A], axis=-2)  # [n, r, 2]
    b_own = xp.concatenate([own.b, box.b], axis=-1)
    h_own = xp.concatenate([own.h, box.h], axis=-1)
    r = A_own.shape[1]
    eye = xp.eye(n, dtype=dtype)
    G_own = (eye[:, None, :, None] * A_own[:, :, None, :]).reshape(n * r, n * 2)
    G = xp.concatenate([G_pair.reshape(len(pi), 2 * n), G_own], axis=0)
    h = xp.concatenate([alpha, b_own.reshape(-1)])
    hb = xp.concatenate([h_pair, h_own.reshape(-1)])
    G, h, present = _normalised(G, h, xp)
    soft = soft_rows(hb, xp)
    reach = 2.0 * xp.sqrt(xp.sum(b_own[:, -4:] ** 2) / n)  # as in ``_relaxed_one``
    h = xp.where(soft, xp.maximum(h, -reach), h)
    upper = slack_upper(h, soft, xp)
    weight = xp.full(h.shape, config.relax_weight, dtype=dtype)
    P = 2.0 * xp.eye(2 * n, dtype=dtype)
    npair = len(pi)
    g3 = G[:npair].reshape(npair, n, 2)
    a_i = g3[np.arange(npair), pi]  # [P, 2] robot i's part of each (normalised) pair row
    a_own = G[npair:].reshape(n, r, n, 2)[np.arange(n), :, np.arange(n)]  # [n, r, 2]

    def gram(w):
        """G' diag(w) G from the structure: 2x2 blocks, pairs touch blocks (i,i), (j,j), (i,j)."""
        wp, wo = w[:npair], w[npair:].reshape(n, r)
        outer = wp[:, None, None] * a_i[:, :, None] * a_i[:, None, :]  # [P, 2, 2]
        diag = xp.einsum("nr,nra,nrb->nab", wo, a_own, a_own)
        K = xp.zeros((n, n, 2, 2), dtype=dtype)
        if _is_jax(xp):
            K = K.at[np.arange(n), np.arange(n)].add(diag)
            K = K.at[pi, pi].add(outer).at[pj, pj].add(outer)
            K = K.at[pi, pj].add(-outer).at[pj, pi].add(-outer)
        else:
            np.add.at(K, (np.arange(n), np.arange(n)), diag)
            np.add.at(K, (pi, pi), outer)
            np.add.at(K, (pj, pj), outer)
            np.add.at(K, (pi, pj), -outer)
            np.add.at(K, (pj, pi), -outer)
        return K.transpose(0, 2, 1, 3).reshape(2 * n, 2 * n)

    res = qp.solve_qp_soft(
        P,
        -2.0 * u0.reshape(-1),
        G,
        h,
        soft,
        weight,
        upper,
        xp=xp,
        iters=config.relax_iters * 2,
        gram=gram,
    )
    u = res.x.reshape(n, 2)
    viol = G @ res.x - h
    # Hard rows must hold; soft rows may give, but never past "no deeper" (<= 0).
    hard_ok = xp.all(xp.where(soft, viol + h, viol) <= RELAX_TOL * (1.0 + xp.abs(h)))
    ok = xp.all(xp.isfinite(u)) & hard_ok & finite
    loosened = soft & (viol > RELAX_TOL) & present
    robot_rows = np.concatenate([np.stack([pi, pj], -1), np.repeat(np.arange(n), r)[:, None]
                                 .repeat(2, axis=1)])  # the robots each row involves
    touched = xp.zeros(n, dtype=bool)
    if _is_jax(xp):
        touched = touched.at[robot_rows[:, 0]].max(loosened).at[robot_rows[:, 1]].max(loosened)
    else:
        np.logical_or.at(touched, robot_rows[:, 0], loosened)
        np.logical_or.at(touched, robot_rows[:, 1], loosened)
    status = xp.where(
        ok,
        xp.where(touched, FilterStatus.RELAXED, FilterStatus.OK),
        xp.where(finite, FilterStatus.INFEASIBLE, FilterStatus.INVALID_INPUT),
    )
    status = xp.broadcast_to(status, (n,)).astype(xp.int32)
    # An interior-point solution sits a hair inside the feasible set; snap back to the nominal
    # command where it was already safe so that "no intervention" is exact.
    feasible_nominal = xp.all(G @ u0.reshape(-1) <= h)
    u = xp.where(feasible_nominal, u0, u)
    # The speed cap is not a QP row: scale *every* robot by the smallest per-robot factor, so
    # pair rows (which mix two robots' commands) keep a . u <= b for b >= 0 and "no deeper".
    speed = xp.sqrt(xp.sum(u * u, axis=-1))
    cap = xp.where(speed > limits.speed_max, limits.speed_max / xp.maximum(speed, 1e-12), 1.0)
    u = _enforce_limits(u * xp.min(cap), limits, xp)
    u = xp.where((status >= FilterStatus.INFEASIBLE)[:, None], 0.0, u)
    pair_h = xp.full((n, n), xp.inf, dtype=dtype)
    if _is_jax(xp):
        pair_h = pair_h.at[pi, pj].set(h_pair).at[pj, pi].set(h_pair)
    else:
        pair_h[pi, pj] = h_pair
        pair_h[pj, pi] = h_pair
    barrier = xp.concatenate([pair_h, own.h], axis=-1)
    row_slack = xp.where(loosened, viol, 0.0)
    slack = xp.zeros(n, dtype=dtype)
    if _is_jax(xp):
        slack = slack.at[robot_rows[:, 0]].max(row_slack).at[robot_rows[:, 1]].max(row_slack)
    else:
        np.maximum.at(slack, robot_rows[:, 0], row_slack)
        np.maximum.at(slack, robot_rows[:, 1], row_slack)
    slack = xp.where(status == FilterStatus.RELAXED, slack, 0.0)
    intervened = xp.any(u != u_nom, axis=-1)
    return u, FilterInfo(barrier, slack, status, intervened)


def gather_neighbours(points, index, xp=np):
    """Neighbour positions [n, k, 2] from a ``NeighbourGraph.index`` [n, k]."""
    return points[index]


def safety_filter(
    points, u_nom, graph, world, params, limits, config: FilterConfig, xp=None, extra=None
):
    """Filter the nominal commands of one environment's robots.

    Args:
        points: [n, 2] filter-point positions [m].
        u_nom: [n, 2] nominal velocities [m/s].
        graph: ``core.graph.NeighbourGraph`` (ignored by the centralised mode).
        world: ``World``; params: ``CBFParams``; limits: ``Limits``; config: ``FilterConfig``.
        xp: array namespace; defaults to ``jax.numpy``.
        extra: more per-robot barrier rows (see ``filter_robots``) or ``None``.

    Returns:
        ``(u_safe [n, 2], FilterInfo)``.
    """
    if xp is None:
        import jax.numpy as xp  # noqa: PLC0415
    if config.mode == "centralised":
        return centralised_filter(points, u_nom, world, params, limits, config, xp, extra)
    nbr = gather_neighbours(points, graph.index, xp)
    order = pair_order(graph.index, xp)
    return filter_robots(
        points, u_nom, nbr, graph.mask, world, params, limits, config, xp, order, extra
    )


def pair_order(index, xp=np):
    """sign(id_i - id_j) [n, k] of each robot and its neighbours, ids being row numbers."""
    own = xp.arange(index.shape[-2])[:, None]
    return xp.where(own > index, 1, -1).astype(xp.int32)
