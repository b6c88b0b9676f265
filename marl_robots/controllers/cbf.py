"""Control-barrier-function rows for ground robots: robot-robot, obstacles, arena walls.

Every barrier ``h(p) >= 0`` on a point ``p`` with velocity command ``u`` (single integrator,
or the look-ahead point of a unicycle) becomes one linear row ``a . u <= b`` of the condition
``dh/dt >= -alpha(h)``:

* robot-robot ``h = |p_i - p_j|^2 - d^2`` -> ``-2 (p_i - p_j) . u_i <= share * alpha(h)``
  (decentralised: each robot takes half, ``share = 1/2``; the pair's sum gives the full condition),
* obstacle (centre c, radius r) ``h = |p - c|^2 - (r + margin)^2``
  -> ``-2 (p - c) . u <= alpha(h)``,
* wall ``h = x_max - margin - x`` -> ``u_x <= alpha(h)`` (and the three others).

``alpha`` is a class-K function, linear ``gamma h`` or cubic ``gamma h^3``, with one gain per
robot.  With sample period ``dt > 0`` it is clipped to ``h / dt`` for ``h > 0``: then a constant
command held for ``dt`` keeps ``h >= 0`` *exactly* in discrete time, because each barrier is a
convex function of position (quadratic or linear), so ``h(p + u dt) >= h(p) + dt * dh/dt``.
A unicycle's control point does not move in a straight line over ``dt``: the margins include a
*step margin* ``delta`` (``sim.layout.filter_margins``) that covers its deviation from
``p + u dt``, and in the band ``-band <= h < 0`` that a deviation may leave behind (the true
margin still holds there) the clip ``h / dt`` stays on, so the next command returns the
straight-line prediction to ``h >= 0`` within one period (an outward speed of at most
``delta / dt``; 15 mm/s at the defaults) instead of at the class-K rate, which would let the
next deviations accumulate.
All functions take an ``xp`` array namespace (NumPy or ``jax.numpy``) and broadcast over
leading batch axes.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

ClassK = Literal["linear", "cubic"]
CLASS_K_NAMES: tuple[str, ...] = ("linear", "cubic")
#: Right-hand side used for absent (masked) rows: never active.
INACTIVE_B = 1e6
#: Below this distance between two points [m] a barrier's gradient is taken to vanish, and a
#: deterministic separating direction of this length replaces it (see ``separating_diff``).
DEGENERATE_M = 1e-4


def class_k(h, gamma, kind: ClassK, dt, xp=np, band=0.0):
    """Evaluate the class-K function ``alpha(h)`` with the discrete-time clip.

    Args:
        h: barrier values [...] (units of h).
        gamma: gains broadcastable to h.
        kind: ``"linear"`` (``gamma h``) or ``"cubic"`` (``gamma h^3``).
        dt: sample period [s]; ``0`` disables the ``h / dt`` clip.
        xp: array namespace.
        band: [...] >= 0, the clip ``min(alpha, h / dt)`` applies where ``h >= -band`` (the
            step-margin band, see the module docstring; ``0``: where ``h >= 0``).
    """
    if kind == "linear":
        alpha = gamma * h
    elif kind == "cubic":
        alpha = gamma * h * h * h
    else:
        raise ValueError(f"unknown class-K function {kind!r}; known: {', '.join(CLASS_K_NAMES)}")
    if dt > 0:
        alpha = xp.where(h >= -band, xp.minimum(alpha, h / dt), alpha)
    return alpha


def quadratic_band(reach, step):
    """Band of ``h = |x|^2 - reach^2`` whose distance ``|x|`` is within ``step`` of ``reach``.

    ``reach^2 - (reach - step)^2`` [m^2]: the barrier values between the true margin
    (``reach - step``) and the filter's (``reach``).
    """
    return step * (2.0 * reach - step)


class Rows(NamedTuple):
    """Constraint rows ``A u <= b`` with their barrier values.

    Attributes:
        A: [..., m, 2] normals; zero rows are absent.
        b: [..., m] right-hand sides (``INACTIVE_B`` where absent).
        h: [..., m] barrier values (``inf`` where absent).
    """

    A: object
    b: object
    h: object


def _rows(grad_coeff, h, alpha, present, xp):
    """Row ``-grad_coeff . u <= alpha`` with absent rows neutralised."""
    A = xp.where(present[..., None], -grad_coeff, 0.0)
    b = xp.where(present, alpha, INACTIVE_B)
    return Rows(A, b, xp.where(present, h, xp.inf))


def separating_diff(diff, sign, xp=np):
    """``diff`` [..., 2], or ``sign * (DEGENERATE_M, 0)`` where ``|diff| < DEGENERATE_M``.

    Two coincident points have no gradient to push apart along, so the barrier row would
    vanish and a robot could sit at ``h < 0`` with status OK.  The replacement keeps the row:
    robots ``i < j`` that coincide separate along -x and +x (``sign = sign(id_i - id_j)``), and
    a robot at an obstacle's centre leaves along +x.  The barrier value is unchanged.
    """
    small = xp.sum(diff * diff, axis=-1) < DEGENERATE_M * DEGENERATE_M
    sub = xp.stack([sign * DEGENERATE_M, xp.zeros_like(sign * DEGENERATE_M)], axis=-1)
    return xp.where(small[..., None], sub.astype(diff.dtype), diff)


def robot_rows(
    p, nbr, nbr_mask, distance, gamma, kind, dt, share=0.5, xp=np, order=None, step=0.0
) -> Rows:
    """Robot-robot rows for each robot against its padded neighbour list.

    Args:
        p: [..., 2] own positions [m].
        nbr: [..., k, 2] neighbour positions [m].
        nbr_mask: [..., k] True for real neighbours.
        distance: safety distance d between centres [m].
        gamma: [...] per-robot class-K gain.
        kind, dt: class-K function and sample period, see ``class_k``.
        share: fraction of the pairwise condition this robot enforces (1/2 decentralised).
        order: [..., k] sign(id_i - id_j) of each pair, used where the points coincide
            (``None``: +1, which brakes coincident robots' approach but does not part them).
        step: step margin per robot [m] (``distance`` includes ``2 step``; see ``class_k``).
    """
    diff = p[..., None, :] - nbr  # [..., k, 2]
    h = xp.sum(diff * diff, axis=-1) - distance * distance
    alpha = class_k(h, gamma[..., None], kind, dt, xp, quadratic_band(distance, 2.0 * step))
    sign = xp.ones(h.shape, dtype=p.dtype) if order is None else order.astype(p.dtype)
    return _rows(2.0 * separating_diff(diff, sign, xp), h, share * alpha, nbr_mask, xp)


def obstacle_rows(
    p, obstacles, obstacle_mask, margin, gamma, kind, dt, nearest=None, xp=np, step=0.0
) -> Rows:
    """Circular-obstacle rows, optionally only for each robot's ``nearest`` obstacles.

    Like the neighbour budget, ``nearest`` bounds the QP size: obstacles are ranked by their
    surface distance, and a far obstacle's row ``b = alpha(h)`` is slack anyway.

    Args:
        p: [..., 2] positions [m].
        obstacles: [..., O, 3] (centre x, centre y, radius) [m].
        obstacle_mask: [..., O] True for real obstacles.
        margin: clearance added to each radius (robot radius plus look-ahead) [m].
        gamma: [...] per-robot gain.
        nearest: static number of rows to keep per robot (``None``: all O).
        step: step margin [m] (``margin`` includes it; see ``class_k``).
    """
    diff = p[..., None, :] - obstacles[..., :2]
    reach = obstacles[..., 2] + margin
    dist2 = xp.sum(diff * diff, axis=-1)
    present = xp.broadcast_to(obstacle_mask, dist2.shape)
    if nearest is not None and nearest < dist2.shape[-1]:
        gap = xp.where(present, xp.sqrt(dist2) - reach, xp.inf)
        keep = xp.argsort(gap, axis=-1)[..., :nearest]
        diff = xp.take_along_axis(diff, keep[..., None], axis=-2)
        dist2 = xp.take_along_axis(dist2, keep, axis=-1)
        reach = xp.take_along_axis(xp.broadcast_to(reach, present.shape), keep, axis=-1)
        present = xp.take_along_axis(present, keep, axis=-1)
    h = dist2 - reach * reach
    alpha = class_k(h, gamma[..., None], kind, dt, xp, quadratic_band(reach, step))
    diff = separating_diff(diff, xp.ones(h.shape, dtype=p.dtype), xp)
    return _rows(2.0 * diff, h, alpha, present, xp)


def wall_rows(p, arena, margin, gamma, kind, dt, xp=np, step=0.0) -> Rows:
    """Arena-wall rows for a rectangle ``arena = (x_min, x_max, y_min, y_max)`` [m].

    Rows in order: x_max, x_min, y_max, y_min.  ``step``: the step margin [m] that ``margin``
    includes (see ``class_k``).
    """
    x, y = p[..., 0], p[..., 1]
    h = xp.stack(
        [
            arena[..., 1] - margin - x,
            x - arena[..., 0] - margin,
            arena[..., 3] - margin - y,
            y - arena[..., 2] - margin,
        ],
        axis=-1,
    )
    grad = xp.asarray([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], dtype=p.dtype)
    grad = xp.broadcast_to(grad, h.shape + (2,))
    alpha = class_k(h, gamma[..., None], kind, dt, xp, step)
    return _rows(grad, h, alpha, xp.ones(h.shape, dtype=bool), xp)


def heading_rows(c, heading, nbr_c, nbr_mask, distance, gamma, kind, dt, share=0.5, xp=np):
    """Rows that keep two unicycle *axles* apart, written on the look-ahead point's velocity.

    A unicycle's axle ``c`` moves with ``v e`` (``e`` the heading) and its look-ahead point
    with ``u = v e + l omega e_perp``, so ``v = e . u`` and the axle barrier
    ``h = |c_i - c_j|^2 - d^2`` gives the row ``-2 ((c_i - c_j) . e) e . u <= share alpha(h)``,
    linear in ``u`` like every other row.  The filter adds these rows where the control points
    are already inside their margin (a start inside it, or the float slop of the arc motion):
    there the control-point barrier no longer implies body separation, and the recovery must
    not let the axles swing into contact while the look-ahead points part.

    Args:
        c: [..., 2] own axle positions [m]; heading: [..., 2] unit headings.
        nbr_c: [..., k, 2] neighbour axle positions [m]; nbr_mask: [..., k] rows present.
        distance: least axle distance d [m]; gamma, kind, dt, share: as ``robot_rows``.
    """
    diff = c[..., None, :] - nbr_c
    h = xp.sum(diff * diff, axis=-1) - distance * distance
    alpha = class_k(h, gamma[..., None], kind, dt, xp)
    along = xp.sum(diff * heading[..., None, :], axis=-1)  # (c_i - c_j) . e_i
    grad = 2.0 * along[..., None] * heading[..., None, :]
    return _rows(grad, h, share * alpha, nbr_mask, xp)


def box_rows(yaw, half_width, xp=np) -> Rows:
    """Actuator-limit rows: ``|R(yaw)^T u| <= half_width`` componentwise (a rotated box).

    For a single integrator ``yaw = 0`` and ``half_width = (v_max, v_max)``; for a unicycle's
    look-ahead point ``half_width = (v_max, lookahead * omega_max)`` in the body frame.

    Args:
        yaw: [...] body yaw [rad].
        half_width: [..., 2] limits along body x and body y [m/s].
    """
    c, s = xp.cos(yaw), xp.sin(yaw)
    ex = xp.stack([c, s], axis=-1)
    ey = xp.stack([-s, c], axis=-1)
    A = xp.stack([ex, -ex, ey, -ey], axis=-2)
    b = xp.stack(
        [half_width[..., 0], half_width[..., 0], half_width[..., 1], half_width[..., 1]], -1
    )
    return Rows(A, b, xp.full(b.shape, xp.inf))
