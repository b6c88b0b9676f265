"""The decentralised CBF filter of one robot in plain Python floats (the onboard fast path).

``filter_one`` computes what ``safety_filter.filter_robots`` computes for one robot (n = 1):
the same robot, obstacle (nearest ``obstacle_rows``), wall, extra and box rows in the same
order, the same class-K function and discrete-time clip, the same degenerate directions
(``cbf.separating_diff``), the same exact 2D projection (``qp._project_2d``'s incremental
algorithm, the same formulas and tolerances), the same limit enforcement and statuses.  It
works on Python floats and tuples, so a call costs microseconds instead of the hundreds that
NumPy's per-call array overhead costs for a 2-variable problem of ~20 rows.

The common case (the nominal command satisfies every row) is one pass over the rows.  Two
rare cases call the reference code itself, so their semantics cannot drift:

* the projection is infeasible (only possible inside a margin) or a violated row has lost its
  normal -> the per-row relaxation ``safety_filter._relaxed_one`` on NumPy arrays of exactly
  the reference rows (about a millisecond);
* a non-finite input, or a coordinate beyond ``SANE_M`` -> ``filter_robots`` itself with n = 1
  (fail closed: ``INVALID_INPUT`` and a zero command, or whatever the reference does).

``tests/test_scalar_filter.py`` pins it to ``filter_robots`` (status and command) on random,
infeasible and degenerate problems.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from marl_robots.controllers import cbf, qp
from marl_robots.controllers.safety_filter import (
    CBFParams,
    FilterConfig,
    FilterStatus,
    Limits,
    World,
    _relaxed_one,
    filter_robots,
)

#: Inputs with a coordinate beyond this [m or m/s] go to the NumPy reference (overflow-safe).
SANE_M = 1e6
_BIG = 1e30
_DEG2 = cbf.DEGENERATE_M * cbf.DEGENERATE_M
_WALL_A = ((1.0, -0.0), (-1.0, -0.0), (-0.0, 1.0), (-0.0, -1.0))  # -grad of x_max, x_min, ...


class ScalarResult(NamedTuple):
    """One robot's filter output.

    Attributes:
        u: (ux, uy) filtered velocity [m/s] (zero when braking).
        status: ``FilterStatus`` code.
        slack: largest loosening of a barrier row [m/s] (0 unless ``RELAXED``).
        barrier: barrier values of the robot, obstacle, wall and extra rows (inf if absent).
        intervened: True where ``u`` differs from the nominal command.
    """

    u: tuple[float, float]
    status: int
    slack: float
    barrier: tuple[float, ...]
    intervened: bool


def _alpha(h: float, gamma: float, cubic: bool, dt: float, band: float) -> float:
    """``cbf.class_k`` on one value (same operation order)."""
    a = gamma * h * h * h if cubic else gamma * h
    if dt > 0 and h >= -band:
        a = min(a, h / dt)
    return a


def _finite(*values: float) -> bool:
    return all(abs(v) <= SANE_M for v in values)  # False for NaN and inf


def filter_one(
    p,
    u_nom,
    nbr,
    nbr_mask,
    world: World,
    params: CBFParams,
    gamma: float,
    half_width,
    yaw: float,
    speed_max: float,
    config: FilterConfig,
    order=None,
    extra=(),
) -> ScalarResult:
    """Decentralised filter of one robot; ``filter_robots`` with n = 1, in Python floats.

    Args:
        p: (x, y) filter point [m].
        u_nom: (ux, uy) nominal velocity of that point [m/s].
        nbr: k neighbour points (x, y) [m]; nbr_mask: k bools (True: real neighbour).
        world: ``World`` (obstacles [O, 3], mask [O], arena (x0, x1, y0, y1)) [m].
        params: ``CBFParams`` (its ``gamma`` is ignored: ``gamma`` below is this robot's).
        gamma: class-K gain of this robot.
        half_width: (along body x, along body y) box half-widths [m/s]; yaw: box yaw [rad].
        speed_max: speed cap [m/s] (``inf``: none).
        config: ``FilterConfig`` (decentralised).
        order: k signs sign(id_i - id_j) (``None``: +1 each).
        extra: more rows (ax, ay, b, h) on the same velocity, absent ones as
            (0, 0, ``cbf.INACTIVE_B``, inf) (e.g. ``cbf.heading_rows`` of unicycles).

    Returns:
        ``ScalarResult``.
    """
    px, py = float(p[0]), float(p[1])
    ux0, uy0 = float(u_nom[0]), float(u_nom[1])
    k = len(nbr)
    signs = [1.0] * k if order is None else [float(s) for s in order]
    masks = [bool(m) for m in nbr_mask]
    nbrs = [(float(q[0]), float(q[1])) for q in nbr]
    extra = [tuple(float(v) for v in row) for row in extra]
    gamma = float(gamma)
    sane = _finite(px, py, ux0, uy0) and math.isfinite(gamma)
    sane = sane and all(_finite(*q) for q, m in zip(nbrs, masks) if m)
    sane = sane and all(
        _finite(ax, ay) and (_finite(b) or b == cbf.INACTIVE_B) for ax, ay, b, _ in extra
    )
    if not sane:
        return _reference(
            p,
            u_nom,
            nbr,
            nbr_mask,
            world,
            params,
            gamma,
            half_width,
            yaw,
            speed_max,
            config,
            order,
            extra,
        )
    cubic = config.class_k == "cubic"
    dt = float(config.dt_s)
    rows = []  # (ax, ay, b, h) of every barrier row, in the reference order
    d = float(params.safety_distance)
    d2 = d * d
    step = float(params.step_margin)
    pair_band = cbf.quadratic_band(d, 2.0 * step)
    for (qx, qy), m, sign in zip(nbrs, masks, signs):
        if not m:
            rows.append((0.0, 0.0, cbf.INACTIVE_B, math.inf))
            continue
        dx, dy = px - qx, py - qy
        h = dx * dx + dy * dy - d2
        b = 0.5 * _alpha(h, gamma, cubic, dt, pair_band)
        if dx * dx + dy * dy < _DEG2:
            dx, dy = sign * cbf.DEGENERATE_M, 0.0
        rows.append((-(2.0 * dx), -(2.0 * dy), b, h))
    rows.extend(
        _obstacle_rows(
            px, py, world, float(params.obstacle_margin), gamma, cubic, dt, config.obstacle_rows,
            step,
        )
    )
    x0, x1, y0, y1 = (float(v) for v in np.asarray(world.arena).reshape(4))
    wm = float(params.wall_margin)
    for (ax, ay), h in zip(_WALL_A, (x1 - wm - px, px - x0 - wm, y1 - wm - py, py - y0 - wm)):
        rows.append((ax, ay, _alpha(h, gamma, cubic, dt, step), h))
    rows.extend(extra)
    c, s = math.cos(yaw), math.sin(yaw)
    hw0, hw1 = float(half_width[0]), float(half_width[1])
    box = ((c, s, hw0), (-c, -s, hw0), (-s, c, hw1), (s, -c, hw1))
    stuck = any(ax * ax + ay * ay <= qp.ROW_EPS and b < 0 for ax, ay, b, _ in rows)
    u, feasible = project(rows, box, ux0, uy0)
    status, slack = FilterStatus.OK, 0.0
    if not feasible or stuck:
        u, slack, ok = _relax(rows, yaw, hw0, hw1, ux0, uy0, config)
        status = FilterStatus.RELAXED if ok else FilterStatus.INFEASIBLE
    ux, uy = _enforce_limits(u[0], u[1], c, s, hw0, hw1, float(speed_max))
    if status >= FilterStatus.INFEASIBLE or not (math.isfinite(ux) and math.isfinite(uy)):
        ux, uy = 0.0, 0.0
    if status != FilterStatus.RELAXED:
        slack = 0.0
    barrier = tuple(r[3] for r in rows)
    return ScalarResult((ux, uy), int(status), slack, barrier, ux != ux0 or uy != uy0)


def _obstacle_rows(px, py, world, margin, gamma, cubic, dt, nearest, step):
    """``cbf.obstacle_rows`` of one point: rows (ax, ay, b, h), nearest first when cut."""
    obstacles = np.asarray(world.obstacles, dtype=float).reshape(-1, 3).tolist()
    mask = np.broadcast_to(np.asarray(world.obstacle_mask, dtype=bool), (len(obstacles),))
    items = []
    for (cx, cy, r), present in zip(obstacles, mask.tolist()):
        dx, dy = px - cx, py - cy
        reach = r + margin
        items.append((dx, dy, dx * dx + dy * dy, reach, present))
    if nearest is not None and nearest < len(items):
        gap = [math.sqrt(it[2]) - it[3] if it[4] else math.inf for it in items]
        keep = sorted(range(len(items)), key=gap.__getitem__)[:nearest]  # stable, as argsort
        items = [items[i] for i in keep]
    rows = []
    for dx, dy, dist2, reach, present in items:
        if not present:
            rows.append((0.0, 0.0, cbf.INACTIVE_B, math.inf))
            continue
        h = dist2 - reach * reach
        if dist2 < _DEG2:
            dx, dy = cbf.DEGENERATE_M, 0.0
        band = cbf.quadratic_band(reach, step)
        rows.append((-(2.0 * dx), -(2.0 * dy), _alpha(h, gamma, cubic, dt, band), h))
    return rows


def project(rows, box, ux0: float, uy0: float, feas_tol: float = qp.FEAS_TOL):
    """Exact projection of (ux0, uy0) onto ``{u : a . u <= b}`` over ``rows`` then ``box``.

    ``qp._project_2d`` for one problem, the same formulas in the same order: rows are taken one
    at a time; a violated row moves the point to its line's closest point to ``u0`` clipped to
    the interval the earlier rows leave.  Absent rows (normal shorter than ``qp.ROW_EPS``) are
    inert there and skipped here.

    Args:
        rows: (ax, ay, b, ...) barrier rows; box: (ax, ay, b) actuator rows, taken last.
        ux0, uy0: point to project [m/s].
        feas_tol: allowed violation of a normalised row [m/s].

    Returns:
        ``((ux, uy), feasible)``; where infeasible, ``u0``.
    """
    lines = []  # normalised present rows (nx, ny, bn)
    ux, uy = ux0, uy0
    for row in (*rows, *box):
        ax, ay, b = row[0], row[1], row[2]
        norm2 = ax * ax + ay * ay
        if not norm2 > qp.ROW_EPS:
            continue
        inv = 1.0 / math.sqrt(norm2)
        nx, ny, bn = ax * inv, ay * inv, b * inv
        if nx * ux + ny * uy - bn > 0:
            off = nx * ux0 + ny * uy0 - bn
            qx, qy = ux0 - off * nx, uy0 - off * ny
            dx, dy = -ny, nx
            t_hi, t_lo = _BIG, -_BIG
            for mx, my, mb in lines:
                nd = mx * dx + my * dy
                rhs = mb - (mx * qx + my * qy)
                if nd > 1e-9:
                    t_hi = min(t_hi, rhs / nd)
                elif nd < -1e-9:
                    t_lo = max(t_lo, rhs / nd)
                elif rhs < -feas_tol:
                    return (ux0, uy0), False
            if t_lo > t_hi + feas_tol:
                return (ux0, uy0), False
            t = min(max(t_lo, 0.0), t_hi)
            ux, uy = qx + t * dx, qy + t * dy
        lines.append((nx, ny, bn))
    return (ux, uy), True


def _enforce_limits(ux, uy, c, s, hw0, hw1, speed_max):
    """``safety_filter._enforce_limits`` of one command (clip to the box, cap the speed)."""
    bx, by = c * ux + s * uy, -s * ux + c * uy
    if abs(bx) > hw0 or abs(by) > hw1:
        bx, by = min(max(bx, -hw0), hw0), min(max(by, -hw1), hw1)
        ux, uy = c * bx - s * by, s * bx + c * by
    speed = math.sqrt(ux * ux + uy * uy)
    if speed > speed_max:
        scale = speed_max / max(speed, 1e-12)
        ux, uy = ux * scale, uy * scale
    return ux, uy


def _relax(rows, yaw, hw0, hw1, ux0, uy0, config):
    """The reference per-row relaxation (``_relaxed_one``) on these rows: (u, slack, ok)."""
    A = np.array([r[:2] for r in rows], dtype=float).reshape(-1, 2)
    b = np.array([r[2] for r in rows], dtype=float)
    h = np.array([r[3] for r in rows], dtype=float)
    box = cbf.box_rows(np.float64(yaw), np.array([hw0, hw1]), np)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        u, slack, ok = _relaxed_one(
            A,
            b,
            h,
            box.A,
            box.b,
            np.array([ux0, uy0]),
            config.relax_weight,
            config.relax_iters,
            np,
        )
    return (float(u[0]), float(u[1])), float(slack), bool(ok)


def _reference(
    p, u_nom, nbr, nbr_mask, world, params, gamma, half_width, yaw, speed_max, config, order, extra
) -> ScalarResult:
    """``filter_robots`` itself, n = 1 (non-finite or absurd inputs: fail closed as it does)."""
    k = len(nbr)
    ex = None
    if extra:
        arr = np.array(extra, dtype=float).reshape(1, -1, 4)
        ex = cbf.Rows(arr[..., :2], arr[..., 2], arr[..., 3])
    params1 = params._replace(gamma=np.array([gamma], dtype=float))
    limits = Limits(
        np.array([half_width], dtype=float),
        np.array([yaw], dtype=float),
        np.array([speed_max], dtype=float),
    )
    order_arr = None if order is None else np.array([order], dtype=np.int32).reshape(1, k)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        u, info = filter_robots(
            np.array([p], dtype=float),
            np.array([u_nom], dtype=float),
            np.array(nbr, dtype=float).reshape(1, k, 2),
            np.array(nbr_mask, dtype=bool).reshape(1, k),
            world,
            params1,
            limits,
            config,
            np,
            order_arr,
            ex,
        )
    return ScalarResult(
        (float(u[0, 0]), float(u[0, 1])),
        int(info.status[0]),
        float(info.slack[0]),
        tuple(info.barrier[0].tolist()),
        bool(info.intervened[0]),
    )
