"""The QP solvers against cvxpy (Clarabel) as the reference oracle."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np

from marl_robots.controllers import qp

#: Agreement required with the cvxpy oracle [units of u].
ORACLE_ATOL = 1e-4
N_RANDOM_QPS = 500


def random_feasible_qp(rng, m):
    """A 2D projection QP whose polygon contains a ball of radius >= 0.02 around ``c``."""
    A = rng.normal(size=(m, 2))
    c = rng.uniform(-1, 1, size=2)
    b = A @ c + rng.uniform(0.02, 1.0, size=m) * np.linalg.norm(A, axis=1)
    u0 = rng.uniform(-3, 3, size=2)
    return A, b, u0


def cvxpy_projection(A, b, u0):
    u = cp.Variable(2)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(u - u0)), [A @ u <= b])
    prob.solve(solver=cp.CLARABEL)
    return prob.status, (None if u.value is None else u.value)


def _oracle_batch(seed, max_rows=15):
    """``N_RANDOM_QPS`` random feasible QPs padded with zero rows to ``max_rows``, + cvxpy."""
    rng = np.random.default_rng(seed)
    A_all = np.zeros((N_RANDOM_QPS, max_rows, 2))
    b_all = np.zeros((N_RANDOM_QPS, max_rows))
    u0_all = np.zeros((N_RANDOM_QPS, 2))
    ref = np.zeros((N_RANDOM_QPS, 2))
    for i in range(N_RANDOM_QPS):
        m = int(rng.integers(1, max_rows + 1))
        A, b, u0 = random_feasible_qp(rng, m)
        status, ref[i] = cvxpy_projection(A, b, u0)
        assert status == cp.OPTIMAL
        A_all[i, :m], b_all[i, :m], u0_all[i] = A, b, u0
    return A_all, b_all, u0_all, ref


def test_project_2d_matches_cvxpy_on_random_qps_float64():
    A, b, u0, ref = _oracle_batch(0)
    sol = qp.project_2d(A, b, u0, np)
    assert sol.feasible.all()
    worst = float(np.max(np.abs(sol.u - ref)))
    assert worst <= ORACLE_ATOL, f"worst deviation from cvxpy {worst:.2e}"


def test_project_2d_matches_cvxpy_on_random_qps_float32_jax():
    A, b, u0, ref = _oracle_batch(1)
    f32 = [jnp.asarray(x, jnp.float32) for x in (A, b, u0)]
    sol = jax.jit(lambda A, b, u: qp.project_2d(A, b, u, jnp))(*f32)
    assert bool(sol.feasible.all())
    worst = float(np.max(np.abs(np.asarray(sol.u, np.float64) - ref)))
    assert worst <= ORACLE_ATOL, f"worst deviation from cvxpy {worst:.2e}"


def test_project_2d_batched_jit_equals_one_by_one():
    rng = np.random.default_rng(1)
    qps = [random_feasible_qp(rng, 8) for _ in range(64)]
    A, b, u0 = (np.stack(x).astype(np.float32) for x in zip(*qps))
    batched = jax.jit(lambda A, b, u: qp.project_2d(A, b, u, jnp))(A, b, u0)
    for i in range(len(qps)):
        single = qp.project_2d(A[i], b[i], u0[i], np)
        np.testing.assert_allclose(np.asarray(batched.u[i]), single.u, atol=1e-5)


def test_project_2d_reports_infeasible_and_keeps_input():
    rng = np.random.default_rng(2)
    for _ in range(100):
        a = rng.normal(size=2)
        extra = rng.normal(size=(int(rng.integers(0, 5)), 2))
        # a.u <= -1 and -a.u <= -1 cannot both hold.
        A = np.vstack([a, -a, extra])
        b = np.concatenate([[-1.0, -1.0], rng.uniform(1, 2, len(extra))])
        u0 = rng.normal(size=2)
        sol = qp.project_2d(A, b, u0, np)
        assert not sol.feasible
        np.testing.assert_array_equal(sol.u, u0)
        assert cvxpy_projection(A, b, u0)[0] in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE)


def test_project_2d_ignores_zero_rows():
    A = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([0.5, -1.0])  # the zero row would be infeasible if it counted
    sol = qp.project_2d(A, b, np.array([2.0, 1.0]), np)
    assert sol.feasible
    np.testing.assert_allclose(sol.u, [0.5, 1.0], atol=1e-12)


def test_dense_ipm_matches_cvxpy():
    rng = np.random.default_rng(3)
    worst = 0.0
    for _ in range(100):
        n = int(rng.integers(2, 9))
        m = int(rng.integers(1, 20))
        L = rng.normal(size=(n, n))
        P = L @ L.T + 0.5 * np.eye(n)
        q = rng.normal(size=n)
        G = rng.normal(size=(m, n))
        h = G @ rng.normal(size=n) + rng.uniform(0.05, 1.0, m)
        res = qp.solve_qp_dense(P, q, G, h, np, iters=30)
        x = cp.Variable(n)
        prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x), [G @ x <= h])
        prob.solve(solver=cp.CLARABEL)
        worst = max(worst, float(np.max(np.abs(res.x - x.value))))
        assert float(res.primal_residual) <= 1e-8
    assert worst <= ORACLE_ATOL, f"worst deviation from cvxpy {worst:.2e}"


def test_dense_ipm_float32_jit_converges_without_nans():
    rng = np.random.default_rng(4)
    P = np.diag([2.0, 2.0, 2e6]).astype(np.float32)
    for _ in range(50):
        A = rng.normal(size=(10, 2))
        G = np.hstack([A, -np.ones((10, 1))]).astype(np.float32)
        G = np.vstack([G, [[0, 0, -1]]]).astype(np.float32)
        h = np.concatenate([rng.uniform(-1e-3, 1e-3, 10), [0.0]]).astype(np.float32)
        q = np.concatenate([-2 * rng.normal(size=2), [0.0]]).astype(np.float32)
        res = jax.jit(lambda P, q, G, h: qp.solve_qp_dense(P, q, G, h, jnp, 30))(P, q, G, h)
        assert np.all(np.isfinite(np.asarray(res.x)))
        assert float(res.primal_residual) <= 1e-4


def test_incremental_projection_equals_enumeration_including_infeasible():
    """Two independent exact algorithms agree on feasibility and on the solution."""
    rng = np.random.default_rng(5)
    m = 12
    A = rng.normal(size=(4000, m, 2))
    A[rng.random((4000, m)) < 0.15] = 0.0  # absent rows
    b = rng.normal(size=(4000, m)) * 0.5 + 0.2  # a fair share of empty polygons
    u0 = rng.normal(size=(4000, 2))
    inc = qp.project_2d(A, b, u0, np)
    enum = qp.project_2d_enumerate(A, b, u0, np)
    assert 0 < inc.feasible.sum() < len(u0)
    np.testing.assert_array_equal(inc.feasible, enum.feasible)
    np.testing.assert_allclose(inc.u, enum.u, atol=1e-9)
