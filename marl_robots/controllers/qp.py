"""Small quadratic-program solvers shared by the safety filters (NumPy or JAX arrays).

Every function takes an ``xp`` array namespace (``numpy`` or ``jax.numpy``) so that the same
math runs batched under ``jit``/``vmap`` in training and on one robot's CPU onboard, and so that
the NumPy benchmark baseline does exactly the same work.

* ``project_2d`` solves ``min ||u - u0||^2  s.t.  A u <= b`` for u in R^2 *exactly* by adding
  rows one at a time (O(m^2)); ``project_2d_enumerate`` gets the same answer by enumerating the
  candidates (u0, its projection on each line, each pairwise intersection: at most two rows are
  active in the plane) and keeping the closest feasible one (O(m^3)), and serves as its oracle.
  With NumPy it runs the row loop as written (the reference); with JAX it solves only the
  problems whose ``u0`` violates a row (compacted, ``sparse_apply``), and for those computes
  every row's candidate at once and keeps only the "is row i violated" test serial
  (``_project_2d_vec``, the same formulas, no per-row loop over the batch).
* ``solve_qp_dense`` is a fixed-iteration primal-dual interior-point method (Mehrotra
  predictor-corrector) for ``min 1/2 x'Px + q'x  s.t.  G x <= h`` of any small dimension; the
  centralised filter and the minimal-violation relaxation use it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

#: Constraint-violation tolerance of a candidate, relative to the row's scale [same units as u].
FEAS_TOL = 1e-5
#: Rows whose normal is shorter than this are treated as absent.
ROW_EPS = 1e-12


@lru_cache(maxsize=64)
def _pairs(m: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(m, k=1)
    return i.astype(np.int32), j.astype(np.int32)


class Projection(NamedTuple):
    """Result of ``project_2d``: the solution [..., 2] and whether the QP was feasible [...]."""

    u: object
    feasible: object


def project_2d_enumerate(A, b, u0, xp=np, feas_tol: float = FEAS_TOL) -> Projection:
    """Project ``u0`` onto the polygon ``{u : A u <= b}`` exactly, by enumerating candidates.

    O(m^3) work per problem; kept as an independent exact oracle for ``project_2d``.

    Args:
        A: [..., m, 2] constraint normals (rows of zeros are ignored).
        b: [..., m] right-hand sides.
        u0: [..., 2] point to project.
        xp: ``numpy`` or ``jax.numpy``.
        feas_tol: allowed violation of a row, in units of u (the row is normalised).

    Returns:
        ``Projection(u, feasible)``; where infeasible, ``u`` is ``u0`` and ``feasible`` False.
    """
    m = A.shape[-2]
    norm2 = xp.sum(A * A, axis=-1)  # [..., m]
    present = norm2 > ROW_EPS
    safe_norm2 = xp.where(present, norm2, 1.0)
    viol0 = xp.sum(A * u0[..., None, :], axis=-1) - b  # [..., m]
    # Candidates on one line: u0 moved along the row normal onto the line.
    proj = u0[..., None, :] - (viol0 / safe_norm2)[..., None] * A  # [..., m, 2]
    # Candidates at the intersection of two lines (Cramer's rule).
    pi, pj = _pairs(m)
    ai, aj = A[..., pi, :], A[..., pj, :]
    bi, bj = b[..., pi], b[..., pj]
    det = ai[..., 0] * aj[..., 1] - ai[..., 1] * aj[..., 0]
    scale = xp.sqrt(norm2[..., pi] * norm2[..., pj])
    good_det = xp.abs(det) > 1e-7 * scale + ROW_EPS
    safe_det = xp.where(good_det, det, 1.0)
    vx = (bi * aj[..., 1] - bj * ai[..., 1]) / safe_det
    vy = (ai[..., 0] * bj - aj[..., 0] * bi) / safe_det
    vert = xp.stack([vx, vy], axis=-1)  # [..., P, 2]
    cand = xp.concatenate([u0[..., None, :], proj, vert], axis=-2)  # [..., C, 2]
    cand_ok = xp.concatenate(
        [xp.ones_like(present[..., :1]), present, good_det & present[..., pi] & present[..., pj]],
        axis=-1,
    )
    # Normalised violation of every row by every candidate.
    inv_norm = xp.where(present, 1.0 / xp.sqrt(safe_norm2), 0.0)
    resid = (xp.einsum("...cd,...md->...cm", cand, A) - b[..., None, :]) * inv_norm[..., None, :]
    resid = xp.where(present[..., None, :], resid, -1.0)
    feasible_c = cand_ok & xp.all(resid <= feas_tol, axis=-1) & xp.all(xp.isfinite(cand), axis=-1)
    cost = xp.sum((cand - u0[..., None, :]) ** 2, axis=-1)
    cost = xp.where(feasible_c, cost, xp.inf)
    best = xp.argmin(cost, axis=-1)
    u = xp.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
    feasible = xp.any(feasible_c, axis=-1)
    u = xp.where(feasible[..., None], u, u0)
    return Projection(u, feasible)


def project_2d(A, b, u0, xp=np, feas_tol: float = FEAS_TOL, bound=None, need=None) -> Projection:
    """Project ``u0`` onto the polygon ``{u : A u <= b}`` exactly, adding rows one at a time.

    Incremental (Seidel-style) algorithm: keep the optimum ``u`` of the rows seen so far; when
    row i is violated, the new optimum lies on line i (a strictly convex objective cannot have
    its constrained optimum strictly inside a constraint that cuts off the previous optimum),
    so it is the point of line i closest to ``u0`` clipped to the interval that rows 0..i-1
    leave on that line.  O(m^2) work, no iteration count to tune, and the same answer as
    ``project_2d_enumerate``.  Arrays are laid out rows-first internally so that every
    operation is a vector operation across the batch.

    Args:
        A: [..., m, 2] constraint normals (rows of zeros are ignored).
        b: [..., m] right-hand sides.
        u0: [..., 2] point to project.
        xp: ``numpy`` or ``jax.numpy``.
        feas_tol: allowed violation of a (normalised) row, in units of u.
        bound: optional [...] radius with ``{u : A u <= b}`` inside the disc ``|u| <= bound``
            (the rows hold an actuator box: its circumradius).  A row whose normalised
            right-hand side is ``>= bound`` is then implied by the others (the polygon, and so
            the projection and its feasibility, are unchanged without it), and the JAX path
            leaves it out of the projection (``_project_pruned``).  The NumPy reference
            ignores it.
        need: optional [...] bool, ``any(violated_rows(A, b, u0), -1)`` computed by the caller
            (for example while its rows were in cache); the JAX path then skips that test.
            The NumPy reference ignores it.

    Returns:
        ``Projection(u, feasible)``; where infeasible, ``u`` is ``u0`` and ``feasible`` False.
    """
    if getattr(xp, "__name__", "").startswith("jax"):
        return _project_2d_jax(A, b, u0, feas_tol, bound, need)
    return _project_2d(A, b, u0, xp, feas_tol)


#: Problems per chunk on CPU: a chunk's working set stays in cache.
CPU_CHUNK = 64
#: Batches up to this size are projected whole (when any problem needs it); larger ones
#: compact the problems that need a projection into rounds of this fraction of the batch
#: (``sparse_apply``: as many rounds as the count needs; 1/8 and 1/16 measured faster than
#: 1/4 and 1/32 at 1024 x 16 robots, where ~7 % need one; 1/8 is one round there).
SPARSE_MIN = 16
SPARSE_FRACTION = 1 / 8
#: Rows kept per problem by the pruned projection (``_project_pruned``); the problems with more
#: rows that may be active are solved on all their rows, compacted into rounds of
#: 1/PRUNED_OVERFLOW of the batch.
PRUNED_ROWS = 8
PRUNED_OVERFLOW = 16


def _normalised_rows(A, b, xp):
    """Unit row normals (nx, ny) [..., m], normalised b, and the present mask [..., m].

    Absent rows (normal shorter than ``ROW_EPS``) read ``0 u <= 1``: never violated.
    """
    ax, ay = A[..., 0], A[..., 1]
    norm2 = ax * ax + ay * ay
    present = norm2 > ROW_EPS
    inv = xp.where(present, 1.0 / xp.sqrt(xp.where(present, norm2, 1.0)), 0.0)
    return ax * inv, ay * inv, xp.where(present, b * inv, 1.0), present


def violated_rows(A, b, u0, xp=np):
    """[..., m] True where ``u0`` violates a present row (the test ``project_2d`` applies).

    A problem with no violated row is its own projection: ``project_2d`` returns ``u0``
    unchanged and feasible for it.
    """
    nx, ny, bn, present = _normalised_rows(A, b, xp)
    return present & (nx * u0[..., 0:1] + ny * u0[..., 1:2] - bn > 0)


def sparse_apply(fn, need, args, default, budget: int):
    """``where(need, fn(args), default)`` computing ``fn`` only for the problems that need it.

    JAX only, for a flat batch (leading axis N of every leaf of ``args`` and ``default``).
    With no problem in need, ``fn`` is not called; otherwise the problems in need are
    compacted into rounds of ``budget`` slots (``fn`` sees a batch of ``budget``) and the
    results scattered back: one round when they fit, as many as it takes when they do not
    (a ``lax.while_loop`` of ``ceil(count / budget)`` rounds), so the work follows the number
    of problems in need and an overflow is exact without solving the whole batch.  ``fn`` must
    act on each problem independently.  Call this on a whole batch rather than inside a
    ``vmap`` (under ``vmap`` the loop runs for the largest count of the batch).

    Args:
        fn: batched function of ``args`` returning a pytree shaped like ``default``.
        need: [N] bool.
        args: pytree of [N, ...] inputs.
        default: pytree of [N, ...] outputs where ``need`` is False.
        budget: static slot count of one round, 1 <= budget.

    Returns:
        Pytree like ``default``.
    """
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    n = need.shape[0]
    count = jnp.sum(need.astype(jnp.int32))
    tree = jax.tree_util.tree_map

    if budget >= n:

        def whole(_):
            out = fn(args)
            return tree(lambda o, d: jnp.where(_bcast(need, o), o, d), out, default)

        return jax.lax.cond(count > 0, whole, lambda _: default, None)
    rounds_max = -(-n // budget)
    # Indices of the problems in need first, padded with n (gathers clip, scatters drop it).
    (order,) = jnp.nonzero(need, size=rounds_max * budget, fill_value=n)

    def one_round(i, out):
        idx = jax.lax.dynamic_slice_in_dim(order, i * budget, budget)
        sub = tree(lambda x: jnp.take(x, idx, axis=0, mode="clip"), args)
        res = fn(sub)
        return tree(lambda d, o: d.at[idx].set(o, mode="drop"), out, res)

    rounds = (count + budget - 1) // budget
    return jax.lax.fori_loop(0, rounds, one_round, default)


def _bcast(mask, x):
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def _project_2d_jax(A, b, u0, feas_tol, bound=None, need=None):
    """JAX ``project_2d``: only the problems whose ``u0`` violates a row are solved.

    The others are returned as they are (exact: a feasible point is its own projection); those
    in need are compacted (``sparse_apply``) and solved by ``_project_2d_vec`` (with ``bound``:
    on their rows that may be active, ``_project_pruned``), chunk by chunk on the CPU.
    """
    import jax.numpy as jnp  # noqa: PLC0415

    lead = u0.shape[:-1]
    total = int(np.prod(lead)) if lead else 1
    m = A.shape[-2]
    flat = (A.reshape(total, m, 2), b.reshape(total, m), u0.reshape(total, 2))
    if bound is None or m <= PRUNED_ROWS:

        def solve(x):
            return _chunked_vec(*x, feas_tol)
    else:
        flat = flat + (jnp.broadcast_to(bound, lead).reshape(total).astype(u0.dtype),)

        def solve(x):
            return _project_pruned(*x, feas_tol)

    if total == 1 or m == 0:
        sol = solve(flat)
    else:
        if need is None:
            need = jnp.any(violated_rows(flat[0], flat[1], flat[2], jnp), axis=-1)
        else:
            need = jnp.broadcast_to(need, lead).reshape(total)
        default = Projection(flat[2], jnp.ones((total,), dtype=bool))
        budget = total if total <= SPARSE_MIN else _round_up(total * SPARSE_FRACTION, 16)
        sol = sparse_apply(solve, need, flat, default, budget)
    return Projection(sol.u.reshape(lead + (2,)), sol.feasible.reshape(lead))


def _project_pruned(A, b, u0, bound, feas_tol):
    """``_chunked_vec`` on each problem's rows that may be active, in their order.

    A row whose normalised right-hand side is at least ``bound`` (the radius of a disc that
    holds the polygon) is implied by the rest: leaving it out changes neither the polygon nor
    its emptiness.  The rows left (at most ``PRUNED_ROWS``, the box rows among them) are
    gathered in their original order; the problems with more are solved again on all their rows
    (``sparse_apply``).  The O(m^2) work drops from 22^2 to 8^2 per problem.
    """
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    m = A.shape[-2]
    keep = PRUNED_ROWS
    _, _, bn, present = _normalised_rows(A, b, jnp)
    cand = present & (bn < bound[:, None])
    count = jnp.sum(cand.astype(jnp.int32), axis=-1)
    # The first ``keep`` kept rows in their order: the largest scores m - j of kept rows j.
    score = jnp.where(cand, m - jnp.arange(m, dtype=jnp.int32), -1)
    top, idx = jax.lax.top_k(score, keep)
    filled = top >= 0
    A_k = jnp.where(filled[..., None], jnp.take_along_axis(A, idx[..., None], axis=-2), 0.0)
    b_k = jnp.where(filled, jnp.take_along_axis(b, idx, axis=-1), 1.0)
    small = _chunked_vec(A_k, b_k, u0, feas_tol)
    # The few problems with more rows that may be active: all their rows, compacted again.
    total = u0.shape[0]
    budget = total if total <= SPARSE_MIN else _round_up(total / PRUNED_OVERFLOW, 16)
    return sparse_apply(
        lambda x: _chunked_vec(*x, feas_tol), count > keep, (A, b, u0), small, budget
    )


def _round_up(x: float, to: int = CPU_CHUNK) -> int:
    return int(-(-int(np.ceil(x)) // to) * to)


def _chunked_vec(A, b, u0, feas_tol):
    """``_project_2d_vec`` on a flat batch, in chunks of ``CPU_CHUNK`` on the CPU backend."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    total = u0.shape[0]
    if jax.default_backend() != "cpu" or total <= CPU_CHUNK:
        return _project_2d_vec(A, b, u0, jnp, feas_tol)
    pad = -total % CPU_CHUNK
    flat = [jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) for x in (A, b, u0)]
    shaped = [x.reshape((-1, CPU_CHUNK) + x.shape[1:]) for x in flat]
    out = jax.lax.map(lambda c: _project_2d_vec(c[0], c[1], c[2], jnp, feas_tol), shaped)
    return Projection(out.u.reshape(-1, 2)[:total], out.feasible.reshape(-1)[:total])


def _project_2d_vec(A, b, u0, xp, feas_tol):
    """``_project_2d`` with its row loop split into a parallel part and a short serial one.

    When row i is violated the incremental algorithm moves to the point of line i closest to
    ``u0``, clipped to the interval that rows 0..i-1 leave on that line; that point and
    whether the interval is empty depend on the rows only, not on the iterate.  So every
    row's candidate is computed at once ([..., m, m] pairwise terms, the same formulas), and
    the serial part keeps only the test "is row i violated by the current iterate".
    """
    m = A.shape[-2]
    nx, ny, bn, present = _normalised_rows(A, b, xp)
    ux0, uy0 = u0[..., 0], u0[..., 1]
    off = nx * ux0[..., None] + ny * uy0[..., None] - bn
    qx, qy = ux0[..., None] - off * nx, uy0[..., None] - off * ny  # [..., i]
    dx, dy = -ny, nx  # unit direction along line i
    # [..., i, j]: row j read along line i.
    nd = nx[..., None, :] * dx[..., :, None] + ny[..., None, :] * dy[..., :, None]
    rhs = bn[..., None, :] - (
        nx[..., None, :] * qx[..., :, None] + ny[..., None, :] * qy[..., :, None]
    )
    earlier = np.tri(m, k=-1, dtype=bool)  # j < i
    up = earlier & (nd > 1e-9)
    down = earlier & (nd < -1e-9)
    ratio = rhs / xp.where(up | down, nd, 1.0)
    big = 1e30
    t_hi = xp.min(xp.where(up, ratio, big), axis=-1)
    t_lo = xp.max(xp.where(down, ratio, -big), axis=-1)
    parallel_cut = xp.any(earlier & ~up & ~down & (rhs < -feas_tol), axis=-1)
    empty = parallel_cut | (t_lo > t_hi + feas_tol)
    t = xp.minimum(xp.maximum(t_lo, 0.0), t_hi)
    cx, cy = qx + t * dx, qy + t * dy
    rows = [xp.moveaxis(x, -1, 0) for x in (nx, ny, bn, present, cx, cy, empty)]

    def add_row(carry, row):
        ux, uy, feasible = carry
        nxi, nyi, bni, pi, cxi, cyi, emptyi = row
        need = pi & (nxi * ux + nyi * uy - bni > 0)
        ux = xp.where(need, cxi, ux)
        uy = xp.where(need, cyi, uy)
        return (ux, uy, feasible & ~(need & emptyi)), None

    carry = (ux0, uy0, xp.ones(ux0.shape, dtype=bool))
    if getattr(xp, "__name__", "").startswith("jax"):
        import jax  # noqa: PLC0415 - only on the JAX path

        # A scan, not an unrolled chain: XLA re-evaluates an unrolled chain's shared terms.
        carry = jax.lax.scan(add_row, carry, rows)[0]
    else:
        for i in range(m):
            carry = add_row(carry, [r[i] for r in rows])[0]
    ux, uy, feasible = carry
    u = xp.stack([ux, uy], axis=-1)
    return Projection(xp.where(feasible[..., None], u, u0), feasible)


def _project_2d(A, b, u0, xp, feas_tol):
    m = A.shape[-2]
    ax = xp.moveaxis(A[..., 0], -1, 0)
    ay = xp.moveaxis(A[..., 1], -1, 0)
    norm2 = ax * ax + ay * ay
    present = norm2 > ROW_EPS
    inv = xp.where(present, 1.0 / xp.sqrt(xp.where(present, norm2, 1.0)), 0.0)
    nx, ny = ax * inv, ay * inv
    bn = xp.where(present, xp.moveaxis(b, -1, 0) * inv, 1.0)  # absent rows read 0 <= 1
    ux0, uy0 = u0[..., 0], u0[..., 1]
    rows = xp.arange(m).reshape((m,) + (1,) * ux0.ndim)
    big = 1e30

    def add_row(i, carry):
        ux, uy, feasible = carry
        nxi, nyi, bni = nx[i], ny[i], bn[i]
        need = present[i] & (nxi * ux + nyi * uy - bni > 0)
        off = nxi * ux0 + nyi * uy0 - bni
        qx, qy = ux0 - off * nxi, uy0 - off * nyi  # closest point of line i to u0
        dx, dy = -nyi, nxi  # unit direction along line i
        earlier = rows < i
        nd = nx * dx + ny * dy
        rhs = bn - (nx * qx + ny * qy)
        up = earlier & (nd > 1e-9)
        down = earlier & (nd < -1e-9)
        ratio = rhs / xp.where(up | down, nd, 1.0)
        t_hi = xp.min(xp.where(up, ratio, big), axis=0)
        t_lo = xp.max(xp.where(down, ratio, -big), axis=0)
        parallel_cut = xp.any(earlier & ~up & ~down & (rhs < -feas_tol), axis=0)
        empty = parallel_cut | (t_lo > t_hi + feas_tol)
        t = xp.minimum(xp.maximum(t_lo, 0.0), t_hi)  # clip 0 into [t_lo, t_hi], dtype kept
        ux = xp.where(need, qx + t * dx, ux)
        uy = xp.where(need, qy + t * dy, uy)
        return ux, uy, feasible & ~(need & empty)

    carry = (ux0, uy0, xp.ones(ux0.shape, dtype=bool))
    if getattr(xp, "__name__", "").startswith("jax"):
        import jax  # noqa: PLC0415 - only on the JAX path

        # A rolled loop: XLA compiles unrolled versions of this slowly and runs them slower.
        carry = jax.lax.fori_loop(0, m, add_row, carry)
    else:
        for i in range(m):
            carry = add_row(i, carry)
    ux, uy, feasible = carry
    u = xp.stack([ux, uy], axis=-1)
    return Projection(xp.where(feasible[..., None], u, u0), feasible)


class QPResult(NamedTuple):
    """Result of ``solve_qp_dense``: solution x, dual z, and the final residual norms."""

    x: object
    z: object
    primal_residual: object
    dual_residual: object
    gap: object


def solve_qp_dense(P, q, G, h, xp=np, iters: int = 30) -> QPResult:
    """Solve ``min 1/2 x'Px + q'x  s.t.  G x <= h`` by a fixed-iteration interior-point method.

    Mehrotra predictor-corrector on the slack form ``G x + s = h, s >= 0, z >= 0``.  A fixed
    iteration count keeps it jit-able; the returned residuals say how well it converged (callers
    decide whether that is good enough).  Rows of zeros with large ``h`` are harmless padding.

    Args:
        P: [n, n] positive definite cost matrix.
        q: [n] linear cost.
        G: [m, n] inequality rows.
        h: [m] right-hand sides.
        xp: ``numpy`` or ``jax.numpy``.
        iters: number of Newton iterations.

    Returns:
        ``QPResult`` with x [n], z [m] and scalar residuals.
    """
    n = P.shape[-1]
    m = G.shape[-2]
    x = xp.zeros(n, dtype=P.dtype)
    s = xp.maximum(h - G @ x, 1.0)
    z = xp.ones(m, dtype=P.dtype)

    def max_step(v, dv):
        ratio = xp.where(dv < 0, -v / xp.where(dv < 0, dv, -1.0), xp.inf)
        return xp.minimum(1.0, 0.99 * xp.min(ratio))

    def newton(x, s, z, rc):
        rd = P @ x + q + G.T @ z
        rp = G @ x + s - h
        w = z / s
        K = P + (G.T * w) @ G
        rhs = -rd - G.T @ ((z * rp - rc) / s)
        dx = xp.linalg.solve(K, rhs)
        ds = -rp - G @ dx
        dz = -(rc + z * ds) / s
        return dx, ds, dz

    info = np.finfo(np.dtype(str(P.dtype)))
    # Stop moving once the duality measure is at the precision floor: further float32 steps
    # drive slacks to zero and overflow z / s.
    mu_floor = 10.0 * float(info.eps)
    floor = float(info.eps) ** 2

    def iteration(_, carry):
        x, s, z = carry
        mu = xp.sum(s * z) / m
        active = mu > mu_floor
        dx_a, ds_a, dz_a = newton(x, s, z, s * z)
        alpha_a = xp.minimum(max_step(s, ds_a), max_step(z, dz_a))
        mu_a = xp.sum((s + alpha_a * ds_a) * (z + alpha_a * dz_a)) / m
        sigma = (mu_a / xp.maximum(mu, 1e-30)) ** 3
        dx, ds, dz = newton(x, s, z, s * z + ds_a * dz_a - sigma * mu)
        alpha = xp.minimum(max_step(s, ds), max_step(z, dz))
        alpha = xp.where(active & xp.all(xp.isfinite(dx)), alpha, 0.0)
        dx = xp.where(xp.isfinite(dx), dx, 0.0)
        ds = xp.where(xp.isfinite(ds), ds, 0.0)
        dz = xp.where(xp.isfinite(dz), dz, 0.0)
        x, s, z = x + alpha * dx, s + alpha * ds, z + alpha * dz
        return x, xp.maximum(s, floor), xp.maximum(z, floor)

    if getattr(xp, "__name__", "").startswith("jax"):
        import jax  # noqa: PLC0415 - only on the JAX path

        x, s, z = jax.lax.fori_loop(0, iters, iteration, (x, s, z))
    else:
        for i in range(iters):
            if not xp.sum(s * z) / m > mu_floor:
                break
            try:
                x, s, z = iteration(i, (x, s, z))
            except np.linalg.LinAlgError:  # the JAX path gets NaNs and stops the same way
                break
    primal = xp.max(xp.maximum(G @ x - h, 0.0))
    dual = xp.max(xp.abs(P @ x + q + G.T @ z))
    gap = xp.sum(s * z) / m
    return QPResult(x, z, primal, dual, gap)


def solve_qp_soft(
    P, q, G, h, soft, weight, upper, xp=np, iters: int = 30, gram=None
) -> QPResult:
    """Minimal-violation QP with one slack per row: only the rows marked ``soft`` may give.

    Solves, over x and a slack ``sigma`` [m] (one per row)::

        min 1/2 x'Px + q'x + 1/2 sum_i weight_i sigma_i^2
        s.t. G x - soft * sigma <= h,   0 <= sigma <= upper

    so a hard row (``soft`` False) is never loosened, and a soft row is loosened by at most
    ``upper``.  Same Mehrotra predictor-corrector as ``solve_qp_dense`` on the stacked variable
    (x, sigma); the slack block of the Newton system is diagonal and is eliminated exactly
    (Schur complement), so each iteration solves only an [n, n] system whatever the row count.

    Args:
        P: [n, n] positive definite; q: [n].
        G: [m, n] rows; h: [m] right-hand sides.
        soft: [m] bool, rows that may be loosened.
        weight: [m] positive slack weights.
        upper: [m] positive upper bounds of the slack (any positive value on hard rows).
        xp: ``numpy`` or ``jax.numpy``.
        iters: Newton iterations.
        gram: optional ``gram(w) -> G' diag(w) G`` [n, n] exploiting G's sparsity (the
            centralised filter's pair rows touch two robots each); default dense.

    Returns:
        ``QPResult`` with x [n] and z [m] the slack sigma; ``primal_residual`` is the largest
        violation of ``G x - soft * sigma <= h`` and of the slack bounds.
    """
    n = P.shape[-1]
    m = G.shape[-2]
    dtype = P.dtype
    c = soft.astype(dtype)
    x = xp.zeros(n, dtype=dtype)
    sig = xp.zeros(m, dtype=dtype)
    # Three row groups: G x - c sigma <= h (1), -sigma <= 0 (2), sigma <= upper (3).
    s1 = xp.maximum(h, 1.0)
    s2 = xp.ones(m, dtype=dtype)
    s3 = xp.maximum(upper, 1.0)
    z1 = xp.ones(m, dtype=dtype)
    z2 = xp.ones(m, dtype=dtype)
    z3 = xp.ones(m, dtype=dtype)
    info = np.finfo(np.dtype(str(dtype)))
    mu_floor = 10.0 * float(info.eps)
    floor = float(info.eps) ** 2

    def residuals(x, sig, s, z):
        s1, s2, s3 = s
        z1, z2, z3 = z
        rd_x = P @ x + q + G.T @ z1
        rd_s = weight * sig - c * z1 - z2 + z3
        rp1 = G @ x - c * sig + s1 - h
        rp2 = -sig + s2
        rp3 = sig + s3 - upper
        return rd_x, rd_s, (rp1, rp2, rp3)

    def newton(x, sig, s, z, rc):
        rd_x, rd_s, rp = residuals(x, sig, s, z)
        d = [zi / si for zi, si in zip(z, s)]
        t = [(zi * rpi - rci) / si for zi, rpi, rci, si in zip(z, rp, rc, s)]
        rhs_x = -rd_x - G.T @ t[0]
        rhs_s = -rd_s + c * t[0] + t[1] - t[2]
        E = weight + c * d[0] + d[1] + d[2]
        # d0 - c d0^2 / E: for a soft row the series combination of d0 and (w + d1 + d2),
        # written without d0^2, which overflows float32 near convergence.
        w_eff = xp.where(soft, 1.0 / (1.0 / d[0] + 1.0 / (weight + d[1] + d[2])), d[0])
        K = P + (gram(w_eff) if gram is not None else (G.T * w_eff) @ G)
        dx = xp.linalg.solve(K, rhs_x + G.T @ (c * d[0] * rhs_s / E))
        dsig = (rhs_s + c * d[0] * (G @ dx)) / E
        ds = (-rp[0] - (G @ dx - c * dsig), -rp[1] + dsig, -rp[2] - dsig)
        dz = tuple(-(rci + zi * dsi) / si for rci, zi, dsi, si in zip(rc, z, ds, s))
        return dx, dsig, ds, dz

    def max_step(v, dv):
        ratio = xp.where(dv < 0, -v / xp.where(dv < 0, dv, -1.0), xp.inf)
        return xp.minimum(1.0, 0.99 * xp.min(ratio))

    def step_len(s, z, ds, dz):
        a = xp.asarray(1.0, dtype=dtype)
        for v, dv in zip(s + z, ds + dz):
            a = xp.minimum(a, max_step(v, dv))
        return a

    def iteration(_, carry):
        x, sig, s, z = carry
        mu = sum(xp.sum(si * zi) for si, zi in zip(s, z)) / (3 * m)
        active = mu > mu_floor
        rc_a = tuple(si * zi for si, zi in zip(s, z))
        _, _, ds_a, dz_a = newton(x, sig, s, z, rc_a)
        alpha_a = step_len(s, z, ds_a, dz_a)
        mu_a = sum(
            xp.sum((si + alpha_a * dsi) * (zi + alpha_a * dzi))
            for si, zi, dsi, dzi in zip(s, z, ds_a, dz_a)
        ) / (3 * m)
        sigma_c = (mu_a / xp.maximum(mu, 1e-30)) ** 3
        rc = tuple(
            si * zi + dsi * dzi - sigma_c * mu for si, zi, dsi, dzi in zip(s, z, ds_a, dz_a)
        )
        dx, dsig, ds, dz = newton(x, sig, s, z, rc)
        alpha = step_len(s, z, ds, dz)
        ok = active & xp.all(xp.isfinite(dx)) & xp.all(xp.isfinite(dsig))
        alpha = xp.where(ok, alpha, 0.0)
        fin = lambda v: xp.where(xp.isfinite(v), v, 0.0)  # noqa: E731
        x = x + alpha * fin(dx)
        sig = sig + alpha * fin(dsig)
        s = tuple(xp.maximum(si + alpha * fin(dsi), floor) for si, dsi in zip(s, ds))
        z = tuple(xp.maximum(zi + alpha * fin(dzi), floor) for zi, dzi in zip(z, dz))
        return x, sig, s, z

    carry = (x, sig, (s1, s2, s3), (z1, z2, z3))
    if getattr(xp, "__name__", "").startswith("jax"):
        import jax  # noqa: PLC0415 - only on the JAX path

        carry = jax.lax.fori_loop(0, iters, iteration, carry)
    else:
        for i in range(iters):
            s, z = carry[2], carry[3]
            if not sum(np.sum(si * zi) for si, zi in zip(s, z)) / (3 * m) > mu_floor:
                break
            try:
                carry = iteration(i, carry)
            except np.linalg.LinAlgError:
                break
    x, sig, s, z = carry
    primal = xp.maximum(
        xp.max(xp.maximum(G @ x - c * sig - h, 0.0)),
        xp.max(xp.maximum(xp.maximum(-sig, sig - upper), 0.0)),
    )
    rd_x, _, _ = residuals(x, sig, s, z)
    gap = sum(xp.sum(si * zi) for si, zi in zip(s, z)) / (3 * m)
    return QPResult(x, sig, primal, xp.max(xp.abs(rd_x)), gap)
