"""The JAX fast path of ``qp.project_2d`` (skip feasible, compaction, vectorised rows) against
the reference row loop, in every branch: nothing to solve, compacted, budget overflow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_robots.controllers import qp

#: Agreement of the float32 JAX path with the float64 reference loop [units of u].
PARITY_ATOL = 2e-4
N_PROBLEMS = 12_000
ROWS = 22


def random_problems(rng, n, m, shift=0.0):
    """Random 2D projections with absent rows, far rows, parallel/opposite rows and infeasible
    (empty) polygons; ``shift`` loosens every row (more problems need no projection)."""
    A = rng.normal(size=(n, m, 2))
    b = rng.normal(size=(n, m)) * 2.0 + 1.0 + shift
    absent = rng.random((n, m)) < 0.2
    A[absent] = 0.0
    b[rng.random((n, m)) < 0.1] = 1e6  # far rows
    par = rng.random(n) < 0.1  # row 1 parallel (or opposite) to row 0
    A[par, 1] = A[par, 0] * rng.choice([-1.0, 2.0], size=(par.sum(), 1))
    tiny = rng.random((n, m)) < 0.02  # normals at the degenerate threshold
    A[tiny] *= 1e-7
    u0 = rng.normal(size=(n, 2)) * 2.0
    return A, b, u0


def _reference(A, b, u0):
    return qp._project_2d(A, b, u0, np, qp.FEAS_TOL)


@pytest.mark.parametrize("shift", [0.0, 6.0, 1e3], ids=["most-need", "few-need", "none-need"])
def test_fast_path_equals_reference_loop(shift):
    rng = np.random.default_rng(7)
    A, b, u0 = random_problems(rng, N_PROBLEMS, ROWS, shift)
    A32, b32, u32 = (x.astype(np.float32) for x in (A, b, u0))
    ref = _reference(A32.astype(np.float64), b32.astype(np.float64), u32.astype(np.float64))
    fast = jax.jit(lambda A, b, u: qp.project_2d(A, b, u, jnp))(A32, b32, u32)
    loop = jax.jit(lambda A, b, u: qp._project_2d(A, b, u, jnp, qp.FEAS_TOL))(A32, b32, u32)
    feas = np.asarray(fast.feasible)
    # Status: the fast path agrees with today's float32 JAX loop exactly, and with the float64
    # reference except within the feasibility tolerance.
    np.testing.assert_array_equal(feas, np.asarray(loop.feasible))
    assert (feas != ref.feasible).mean() < 1e-3
    both = feas & ref.feasible
    np.testing.assert_allclose(np.asarray(fast.u)[both], ref.u[both], atol=PARITY_ATOL)
    np.testing.assert_allclose(np.asarray(fast.u), np.asarray(loop.u), atol=1e-5)
    # Infeasible problems keep u0 (the filter relaxes them).
    np.testing.assert_array_equal(np.asarray(fast.u)[~feas], u32[~feas])
    if shift >= 1e3:
        np.testing.assert_array_equal(np.asarray(fast.u), u32)  # exactly untouched


def test_budget_overflow_and_compaction_branches_agree():
    """The same problems solved with a budget that holds them, and one that overflows."""
    rng = np.random.default_rng(3)
    A, b, u0 = (x.astype(np.float32) for x in random_problems(rng, 1024, ROWS, 6.0))
    need = np.asarray(jnp.any(qp.violated_rows(A, b, u0, jnp), axis=-1))
    assert 0 < need.sum() < 1024
    default = qp.Projection(jnp.asarray(u0), jnp.ones(1024, bool))
    solve = jax.jit(
        lambda A, b, u, budget: qp.sparse_apply(
            lambda x: qp._project_2d_vec(*x, jnp, qp.FEAS_TOL), need, (A, b, u), default, budget
        ),
        static_argnums=3,
    )
    small = int(need.sum()) - 1  # overflows: exact fallback over the whole batch
    fits = int(need.sum()) + 5
    out_over, out_fit = solve(A, b, u0, small), solve(A, b, u0, fits)
    ref = _reference(A.astype(np.float64), b.astype(np.float64), u0.astype(np.float64))
    for out in (out_over, out_fit):
        np.testing.assert_array_equal(np.asarray(out.feasible), ref.feasible)
        ok = ref.feasible
        np.testing.assert_allclose(np.asarray(out.u)[ok], ref.u[ok], atol=PARITY_ATOL)
    np.testing.assert_array_equal(np.asarray(out_over.u), np.asarray(out_fit.u))


def test_bench_reports_filter_share_and_changed_fraction():
    from marl_robots.sim.bench import run_bench

    report = run_bench(robots=4, envs_list=(2,), steps=5, repeats=1, numpy_budget_s=0.05,
                       log=lambda s: None)
    assert report["machine"]["jax_device"]
    for row in report["rows"]:
        assert 0.0 <= row["filter_share_of_step_time"] < 1.0
        assert 0.0 <= row["filter_changed_fraction"] <= 1.0
        if row["filter"] == "none":
            assert row["filter_share_of_step_time"] == 0.0
            assert row["filter_changed_fraction"] == 0.0
