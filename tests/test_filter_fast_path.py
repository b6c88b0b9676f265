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
#: Relaxed commands of two float32 interior-point runs batched differently [m/s].
RELAXED_ATOL = 2e-5
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


def boxed_problems(rng, n, m):
    """Problems whose last 4 rows are an actuator box (random yaw, half-widths) and whose other
    rows are partly beyond the box's circumradius (implied), partly not: a random number
    (0-11) per problem, so some exceed ``qp.PRUNED_ROWS`` (the unpruned fallback)."""
    normal = rng.normal(size=(n, m, 2))
    unit = normal / np.linalg.norm(normal, axis=-1, keepdims=True)
    half = rng.uniform(0.05, 0.3, (n, 2))
    reach = np.linalg.norm(half, axis=-1)
    near = rng.random((n, m)) < (rng.integers(0, 12, n) / m)[:, None]
    bn = np.where(near, rng.uniform(-0.4, 1.0, (n, m)) * reach[:, None],
                  rng.uniform(1.0, 4.0, (n, m)) * reach[:, None])
    scale = rng.uniform(0.01, 3.0, (n, m))
    A, b = unit * scale[..., None], bn * scale
    absent = rng.random((n, m)) < 0.15
    A[absent], b[absent] = 0.0, 1e6
    yaw = rng.uniform(-np.pi, np.pi, n)
    c, s = np.cos(yaw), np.sin(yaw)
    ex, ey = np.stack([c, s], -1), np.stack([-s, c], -1)
    box_A = np.stack([ex, -ex, ey, -ey], axis=1)
    box_b = np.stack([half[:, 0], half[:, 0], half[:, 1], half[:, 1]], -1)
    u0 = rng.normal(size=(n, 2)) * 0.4
    return (np.concatenate([A, box_A], 1), np.concatenate([b, box_b], 1), u0,
            reach * (1.0 + 1e-5))


def test_pruned_projection_equals_reference_loop():
    """Rows beyond the box's circumradius left out (``bound``): the same projection and
    feasibility as the reference loop over every row, in the pruned branch (a batch whose
    problems all fit in ``qp.PRUNED_ROWS``) and the fallback (a batch where some do not)."""
    rng = np.random.default_rng(21)
    A, b, u0, bound = (x.astype(np.float32) for x in boxed_problems(rng, N_PROBLEMS, ROWS))
    _, _, bn, present = qp._normalised_rows(A, b, np)
    fits = np.sum(present & (bn < bound[:, None]), axis=-1) <= qp.PRUNED_ROWS
    half = N_PROBLEMS // 4
    assert fits.sum() > half and (~fits).sum() > 100
    batches = {"pruned": np.flatnonzero(fits)[:half], "fallback": np.arange(half)}
    solve = jax.jit(lambda A, b, u, r: qp.project_2d(A, b, u, jnp, bound=r))
    for name, idx in batches.items():
        ref = _reference(*(x[idx].astype(np.float64) for x in (A, b, u0)))
        out = solve(A[idx], b[idx], u0[idx], bound[idx])
        feas = np.asarray(out.feasible)
        assert (feas != ref.feasible).mean() < 1e-3
        both = feas & ref.feasible
        np.testing.assert_allclose(np.asarray(out.u)[both], ref.u[both], atol=PARITY_ATOL)
        print(f"{name}: {half} problems, {int((~fits[idx]).sum())} beyond {qp.PRUNED_ROWS} "
              f"rows, max |u - u_ref| = {np.abs(np.asarray(out.u)[both] - ref.u[both]).max():.3g}")


@pytest.mark.parametrize("relaxed", [8, 32], ids=["compacted", "overflow"])
def test_large_batch_relaxes_only_robots_in_need(relaxed):
    """A batch above ``RELAX_SPARSE_MIN`` relaxes its infeasible robots compacted (or, beyond
    the budget, all at once): the same output as the per-robot ``lax.cond`` path of small
    batches, in both branches."""
    from test_scalar_filter import PARAMS, WORLD, random_problems

    from marl_robots.controllers import scalar_filter
    from marl_robots.controllers.safety_filter import (
        RELAX_SPARSE_MIN,
        FilterConfig,
        FilterStatus,
        Limits,
        World,
        filter_robots,
    )

    n, chunk = 512, 64
    rng = np.random.default_rng(relaxed)
    p, u, nbr, mask, order, gamma, half, yaw, speed, extra = random_problems(rng, 3 * n)
    config = FilterConfig(class_k="linear", dt_s=0.033, obstacle_rows=2)
    args = [x.astype(np.float32) for x in (p, u, nbr)]
    rows = np.concatenate([extra.A, extra.b[..., None], extra.h[..., None]], -1)
    status64 = np.array([
        scalar_filter.filter_one(p[i], u[i], nbr[i], mask[i], WORLD, PARAMS, gamma[i], half[i],
                                 yaw[i], speed[i], config, order[i], rows[i].tolist()).status
        for i in range(len(p))
    ])
    # ``relaxed`` robots inside some margin, the rest OK or invalid input.
    need = status64 == FilterStatus.RELAXED
    pick = np.concatenate([np.flatnonzero(need)[:relaxed], np.flatnonzero(~need)])[:n]
    assert n > RELAX_SPARSE_MIN and len(pick) == n
    sel = lambda x: jnp.asarray(x[pick])  # noqa: E731
    ex = jax.tree_util.tree_map(lambda x: sel(x.astype(np.float32)), extra)
    inputs = (sel(args[0]), sel(args[1]), sel(args[2]), sel(mask))
    world = World(*(jnp.asarray(x, jnp.float32) for x in WORLD[:2]), jnp.asarray(WORLD[2]))
    params = PARAMS._replace(gamma=sel(gamma.astype(np.float32)))
    limits = Limits(sel(half.astype(np.float32)), sel(yaw.astype(np.float32)),
                    sel(speed.astype(np.float32)))

    def run(*x):
        return filter_robots(*x, world, params, limits, config, jnp, sel(order), ex)

    def run_chunked(pts, un, nb, mk):
        def one(i):
            s = lambda a: jax.lax.dynamic_slice_in_dim(a, i * chunk, chunk)  # noqa: E731
            tree = jax.tree_util.tree_map
            return filter_robots(
                s(pts), s(un), s(nb), s(mk), world, params._replace(gamma=s(params.gamma)),
                tree(s, limits), config, jnp, s(sel(order)), tree(s, ex),
            )
        out = jax.lax.map(one, jnp.arange(n // chunk))
        return jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[2:]), out)

    u_big, info_big = jax.jit(run)(*inputs)
    u_ref, info_ref = jax.jit(run_chunked)(*inputs)
    status = np.asarray(info_big.status)
    n_relaxed = int(np.sum(status == FilterStatus.RELAXED))
    assert (n_relaxed <= 16) == (relaxed == 8) and n_relaxed > 0, n_relaxed
    np.testing.assert_array_equal(status, np.asarray(info_ref.status))
    # Relaxed robots come from a float32 interior-point solve, vectorised over another batch
    # size: equal to its precision (RELAX_TOL is 1e-4); the others exactly as small batches.
    ok = status != FilterStatus.RELAXED
    np.testing.assert_allclose(np.asarray(u_big)[ok], np.asarray(u_ref)[ok], atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(u_big), np.asarray(u_ref), atol=RELAXED_ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(info_big.slack), np.asarray(info_ref.slack),
                               atol=RELAXED_ATOL, rtol=0)


#: Positions of the same closed loop run on one device and split across two [m].
SHARD_ATOL_M = 1e-5
_SHARD_SCRIPT = """
import json, jax, numpy as np
from marl_robots.sim.bench import sharded_rollout, use_host_devices
assert use_host_devices(2) == 2, jax.devices()
from marl_robots.sim.closed_loop import rollout
from marl_robots.sim.run import RunSpec, build
task, cfg, params, cbf = build(RunSpec(robots=16, scenario="random", filter="cbf", seed=0))
keys = jax.random.split(jax.random.PRNGKey(0), 16)
states = jax.vmap(lambda k: task.reset(k, params))(keys)
f = lambda s: rollout(task, cfg, s, params, cbf, 40, record=False)[:2]
one = jax.jit(f)(states)
f2, s2 = sharded_rollout(f, states, 2)
two = jax.jit(f2)(s2)
print(json.dumps({
    "shards": len(two[0].pos.sharding.device_set),
    "pos_diff": float(np.max(np.abs(np.asarray(one[0].pos) - np.asarray(two[0].pos)))),
    "interventions": [np.asarray(a.interventions).tolist() for a in (one[1], two[1])],
    "relaxed": [np.asarray(a.relaxed).tolist() for a in (one[1], two[1])],
}))
"""


def test_bench_split_across_two_host_devices_gives_the_same_closed_loop():
    """``bench navigation``'s two-device rows: 16 environments split across two XLA host
    devices (``sharded_rollout``, each device compacting its own robots) run the same closed
    loop as on one device (in a fresh process: the device count is fixed at backend start)."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _SHARD_SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(res)
    assert res["shards"] == 2
    assert res["pos_diff"] <= SHARD_ATOL_M
    assert res["interventions"][0] == res["interventions"][1]
    assert sum(res["interventions"][0]) > 0  # the filter was exercised
    assert res["relaxed"][0] == res["relaxed"][1]
