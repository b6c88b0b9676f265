"""Exact small projection QPs in d <= 3 dimensions by active-set enumeration (NumPy or JAX).

``project_enumerate`` solves ``min ||u - u0||^2  s.t.  G u <= b`` for ``u`` in R^d (d = 1, 2
or 3) exactly: the minimiser of a strictly convex QP is the projection of ``u0`` onto the affine
hull of some set of at most ``d`` linearly independent active rows (KKT + Caratheodory), so the
candidates are ``u0`` itself and its projection onto every such hull; the feasible candidate
closest to ``u0`` is the solution.  No candidate feasible means the QP is infeasible (the
polytope is empty, within the tolerance).  O(m^d) candidates of O(m) checks each: meant for
the handful of rows a drone's filter has (neighbours + acceleration limits).

Every candidate is computed at once with closed-form Gram solves (no loops, no data-dependent
shapes), so it is batched over any leading axes, jit-able and vmap-able, and the same code runs
in NumPy on one robot.  cvxpy is its test oracle (``tests/test_safety_filter_3d.py``).
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from marl_robots.controllers.qp import FEAS_TOL, ROW_EPS

#: Active sets whose (unit-row) Gram determinant is below this are treated as dependent.
GRAM_EPS = 1e-9


class ProjectionND(NamedTuple):
    """Solution ``u [..., d]`` and feasibility ``[...]`` (where infeasible ``u`` is ``u0``)."""

    u: object
    feasible: object


@lru_cache(maxsize=64)
def active_sets(m: int, d: int) -> tuple[np.ndarray, ...]:
    """Index arrays ``[C_s, s]`` of every row subset of size ``s = 1..min(d, m)``."""
    return tuple(
        np.array(list(itertools.combinations(range(m), s)), dtype=np.int32).reshape(-1, s)
        for s in range(1, min(d, m) + 1)
    )


def _solve_gram(gram, r, xp):
    """Solve ``gram lam = r`` for ``s x s`` Gram matrices, s <= 3, in closed form.

    Returns ``(lam [..., s], det [...])``; where ``det`` is tiny ``lam`` is garbage (finite).
    """
    s = gram.shape[-1]
    if s == 1:
        det = gram[..., 0, 0]
        safe = xp.where(xp.abs(det) > GRAM_EPS, det, 1.0)
        return r / safe[..., None], det
    if s == 2:
        a, b_, c = gram[..., 0, 0], gram[..., 0, 1], gram[..., 1, 1]
        det = a * c - b_ * b_
        safe = xp.where(xp.abs(det) > GRAM_EPS, det, 1.0)
        lam0 = (c * r[..., 0] - b_ * r[..., 1]) / safe
        lam1 = (a * r[..., 1] - b_ * r[..., 0]) / safe
        return xp.stack([lam0, lam1], axis=-1), det
    # s == 3: adjugate of a symmetric 3x3 matrix.
    g = gram
    c00 = g[..., 1, 1] * g[..., 2, 2] - g[..., 1, 2] * g[..., 2, 1]
    c01 = g[..., 1, 2] * g[..., 2, 0] - g[..., 1, 0] * g[..., 2, 2]
    c02 = g[..., 1, 0] * g[..., 2, 1] - g[..., 1, 1] * g[..., 2, 0]
    c11 = g[..., 0, 0] * g[..., 2, 2] - g[..., 0, 2] * g[..., 2, 0]
    c12 = g[..., 0, 2] * g[..., 1, 0] - g[..., 0, 0] * g[..., 1, 2]
    c22 = g[..., 0, 0] * g[..., 1, 1] - g[..., 0, 1] * g[..., 1, 0]
    det = g[..., 0, 0] * c00 + g[..., 0, 1] * c01 + g[..., 0, 2] * c02
    safe = xp.where(xp.abs(det) > GRAM_EPS, det, 1.0)
    r0, r1, r2 = r[..., 0], r[..., 1], r[..., 2]
    lam = xp.stack(
        [
            c00 * r0 + c01 * r1 + c02 * r2,
            c01 * r0 + c11 * r1 + c12 * r2,
            c02 * r0 + c12 * r1 + c22 * r2,
        ],
        axis=-1,
    )
    return lam / safe[..., None], det


def normalise_rows(G, b, present, xp=np):
    """Unit-normal rows; absent or zero-normal rows keep a zero normal.

    Returns ``(Gn [..., m, d], bn [..., m], usable [..., m])``: ``usable`` rows may be active;
    a present row with a zero normal is kept as ``0 <= b`` (satisfied iff ``b >= 0``).
    """
    norm = xp.sqrt(xp.sum(G * G, axis=-1))
    usable = present & (norm > ROW_EPS)
    scale = xp.where(usable, 1.0 / xp.where(usable, norm, 1.0), 0.0)
    Gn = G * scale[..., None]
    bn = xp.where(usable, b * scale, b)
    return Gn, bn, usable


def project_enumerate(G, b, u0, present=None, xp=np, feas_tol: float = FEAS_TOL) -> ProjectionND:
    """Project ``u0`` onto ``{u : G u <= b}`` exactly (d <= 3), batched over leading axes.

    Args:
        G: ``[..., m, d]`` row normals.
        b: ``[..., m]`` right-hand sides.
        u0: ``[..., d]`` point to project (the nominal command).
        present: ``[..., m]`` bool, rows that exist (default: all).
        xp: ``numpy`` or ``jax.numpy``.
        feas_tol: allowed violation of a unit-normal row [units of u].

    Returns:
        ``ProjectionND(u, feasible)``.
    """
    m, d = G.shape[-2], G.shape[-1]
    if d > 3:
        raise ValueError(f"project_enumerate handles d <= 3, got d = {d}")
    if present is None:
        present = xp.ones(b.shape, dtype=bool)
    Gn, bn, usable = normalise_rows(G, b, present, xp)

    def feasible(u):  # u [..., C, d] -> [..., C]
        viol = xp.einsum("...md,...cd->...cm", Gn, u) - bn[..., None, :]
        return xp.all((viol <= feas_tol) | ~present[..., None, :], axis=-1)

    cands = [u0[..., None, :]]
    valid = [xp.ones(u0.shape[:-1] + (1,), dtype=bool)]
    residual = xp.einsum("...md,...d->...m", Gn, u0) - bn  # [..., m]
    gram_all = xp.einsum("...md,...nd->...mn", Gn, Gn)  # [..., m, m]
    for idx in active_sets(m, d):
        A = Gn[..., idx, :]  # [..., C, s, d]
        r = residual[..., idx]  # [..., C, s]
        gram = gram_all[..., idx[:, :, None], idx[:, None, :]]  # [..., C, s, s]
        lam, det = _solve_gram(gram, r, xp)
        u = u0[..., None, :] - xp.einsum("...cs,...csd->...cd", lam, A)
        ok = xp.all(usable[..., idx], axis=-1) & (det > GRAM_EPS)
        cands.append(u)
        valid.append(ok)
    cand = xp.concatenate(cands, axis=-2)  # [..., C, d]
    ok = xp.concatenate(valid, axis=-1) & feasible(cand)
    dist = xp.sum((cand - u0[..., None, :]) ** 2, axis=-1)
    dist = xp.where(ok, dist, xp.inf)
    best = xp.argmin(dist, axis=-1)
    u = xp.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
    found = xp.any(ok, axis=-1)
    return ProjectionND(xp.where(found[..., None], u, u0), found)


__all__ = ["ProjectionND", "active_sets", "normalise_rows", "project_enumerate"]
