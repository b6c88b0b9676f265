"""Properties of the CBF safety filter (decentralised and centralised) with NumPy and JAX.

Invariants checked on hypothesis-generated configurations:
* the output respects the actuator limits;
* a nominal command that already satisfies every constraint is returned unchanged;
* with status OK every constraint row holds;
* permuting robots permutes the output;
* one period of the filtered command keeps every pair, wall and obstacle barrier >= 0
  (exact discrete-time safety for single integrators), and the same check FAILS with the filter
  removed, so the property test can detect a broken filter;
* NaN inputs brake and say so; an already-violated state is relaxed, never NaN.
"""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from marl_robots.controllers import cbf
from marl_robots.controllers.safety_filter import (
    CBFParams,
    FilterConfig,
    FilterStatus,
    Limits,
    World,
    barrier_rows,
    filter_robots,
    safety_filter,
)
from marl_robots.core.graph import neighbour_graph_np

ARENA = np.array([-1.6, 1.6, -1.0, 1.0])
D_SAFE = 0.21
MARGIN = 0.095
DT = 0.033
V_MAX = 0.2
#: Tolerance on a constraint row or a barrier after one step (float64 path).
ROW_ATOL = 1e-9
#: NumPy float64 vs JAX float32 filter outputs [m/s].
PARITY_ATOL = 1e-4
#: Agreement with the cvxpy oracle [m/s].
ORACLE_ATOL = 1e-4


def make_case(seed, n, n_obs, unicycle, speed_scale=1.0, overlap=False):
    """Random safe configuration: robots on a jittered grid, obstacles in free cells."""
    rng = np.random.default_rng(seed)
    cell = 0.3
    cols, rows = 9, 5
    centres = np.stack(
        np.meshgrid((np.arange(cols) - 4) * cell, (np.arange(rows) - 2) * cell), -1
    ).reshape(-1, 2)
    pick = rng.permutation(len(centres))
    pos = centres[pick[:n]] + rng.uniform(-0.04, 0.04, (n, 2))
    if overlap:  # push robot 1 into robot 0's safety disc
        pos[1] = pos[0] + np.array([0.8 * D_SAFE, 0.0])
    obs = np.zeros((4, 3))
    obs[:n_obs, :2] = centres[pick[n : n + n_obs]]
    obs[:n_obs, 2] = 0.05
    mask = np.arange(4) < n_obs
    yaw = rng.uniform(-np.pi, np.pi, n) if unicycle else np.zeros(n)
    u_nom = rng.uniform(-1, 1, (n, 2)) * V_MAX * speed_scale
    if unicycle:
        limits = Limits(np.tile([V_MAX, 0.04 * 3.6], (n, 1)), yaw, np.full(n, np.inf))
    else:
        limits = Limits(np.full((n, 2), V_MAX), yaw, np.full(n, V_MAX))
    gamma = rng.uniform(0.5, 30.0, n)
    params = CBFParams(gamma, D_SAFE, MARGIN, MARGIN)
    world = World(obs, mask, ARENA)
    return pos, u_nom, world, params, limits


def run_filter(pos, u_nom, world, params, limits, config, k=6, xp=np):
    g = neighbour_graph_np(pos, k, 10.0)
    return filter_robots(pos, u_nom, pos[g.index], g.mask, world, params, limits, config, xp), g


def all_rows(pos, g, world, params, limits, config):
    rows = barrier_rows(pos, pos[g.index], g.mask, world, params, config, 0.5, np)
    box = cbf.box_rows(limits.yaw, limits.half_width, np)
    return np.concatenate([rows.A, box.A], 1), np.concatenate([rows.b, box.b], 1)


def barriers_after_step(pos, u, world):
    """Smallest pair, wall and obstacle barrier (as distances) after one period of ``u``."""
    nxt = pos + DT * u
    n = len(pos)
    d = np.linalg.norm(nxt[:, None] - nxt[None], axis=-1) + np.eye(n) * 1e9
    pair = d.min() - D_SAFE
    x0, x1, y0, y1 = world.arena
    wall = (
        min(
            (nxt[:, 0] - x0).min(),
            (x1 - nxt[:, 0]).min(),
            (nxt[:, 1] - y0).min(),
            (y1 - nxt[:, 1]).min(),
        )
        - MARGIN
    )
    obs = np.inf
    for (cx, cy, r), real in zip(world.obstacles, world.obstacle_mask):
        if real:
            obs = min(obs, (np.linalg.norm(nxt - [cx, cy], axis=1) - r - MARGIN).min())
    return pair, wall, obs


cases = st.tuples(
    st.integers(0, 2**31 - 1),  # seed
    st.integers(2, 12),  # robots
    st.integers(0, 3),  # obstacles
    st.booleans(),  # unicycle limits
    st.sampled_from(["linear", "cubic"]),
)


@given(cases)
def test_output_within_limits_and_rows_hold_when_ok(case):
    seed, n, n_obs, uni, kind = case
    pos, u_nom, world, params, limits = make_case(seed, n, n_obs, uni, speed_scale=2.0)
    if kind == "cubic":
        params = params._replace(gamma=params.gamma * 1e4)
    config = FilterConfig(class_k=kind, dt_s=DT)
    (u, info), g = run_filter(pos, u_nom, world, params, limits, config)
    assert np.all(np.isfinite(u))
    c, s = np.cos(limits.yaw), np.sin(limits.yaw)
    body = np.stack([c * u[:, 0] + s * u[:, 1], -s * u[:, 0] + c * u[:, 1]], 1)
    assert np.all(np.abs(body) <= limits.half_width + ROW_ATOL)
    assert np.all(np.linalg.norm(u, axis=1) <= limits.speed_max + ROW_ATOL)
    A, b = all_rows(pos, g, world, params, limits, config)
    ok = info.status == FilterStatus.OK
    assert ok.all(), "a safe configuration must always be feasible (braking is)"
    viol = np.einsum("nmd,nd->nm", A, u) - b
    assert viol[ok].max() <= ROW_ATOL * 10


@given(cases)
def test_safe_nominal_passes_unchanged(case):
    seed, n, n_obs, uni, kind = case
    pos, u_nom, world, params, limits = make_case(seed, n, n_obs, uni, speed_scale=0.05)
    config = FilterConfig(class_k=kind, dt_s=DT)
    (u, info), g = run_filter(pos, u_nom, world, params, limits, config)
    A, b = all_rows(pos, g, world, params, limits, config)
    satisfied = np.all(np.einsum("nmd,nd->nm", A, u_nom) <= b, axis=1)
    satisfied &= np.linalg.norm(u_nom, axis=1) <= limits.speed_max
    assume(satisfied.any())  # the implication needs a robot whose nominal is already safe
    np.testing.assert_array_equal(u[satisfied], u_nom[satisfied])
    assert not info.intervened[satisfied].any()


def test_safe_nominal_property_is_not_vacuous():
    """The generator behind the property above does produce already-safe nominal commands."""
    count = 0
    for seed in range(20):
        pos, u_nom, world, params, limits = make_case(seed, 8, 2, True, speed_scale=0.05)
        config = FilterConfig(dt_s=DT)
        (u, _), g = run_filter(pos, u_nom, world, params, limits, config)
        A, b = all_rows(pos, g, world, params, limits, config)
        ok = np.all(np.einsum("nmd,nd->nm", A, u_nom) <= b, axis=1)
        np.testing.assert_array_equal(u[ok], u_nom[ok])
        count += int(ok.sum())
    assert count >= 80  # of 160 robots


@given(cases, st.integers(0, 2**31 - 1))
def test_permuting_robots_permutes_output(case, perm_seed):
    seed, n, n_obs, uni, kind = case
    pos, u_nom, world, params, limits = make_case(seed, n, n_obs, uni)
    config = FilterConfig(class_k=kind, dt_s=DT)
    perm = np.random.default_rng(perm_seed).permutation(n)
    (u, _), _ = run_filter(pos, u_nom, world, params, limits, config, k=n)
    lim_p = Limits(limits.half_width[perm], limits.yaw[perm], limits.speed_max[perm])
    params_p = params._replace(gamma=params.gamma[perm])
    (u_p, _), _ = run_filter(pos[perm], u_nom[perm], world, params_p, lim_p, config, k=n)
    np.testing.assert_allclose(u_p, u[perm], atol=1e-12)


def step_safety_margin(filter_fn, seed, n, n_obs):
    """Smallest barrier (as a distance) after one period of the filtered command (SI)."""
    pos, u_nom, world, params, limits = make_case(seed, n, n_obs, unicycle=False)
    # Aim everyone at their nearest neighbour at full speed: the hardest nominal command.
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(n) * 1e9
    to_nbr = pos[d.argmin(1)] - pos
    u_nom = V_MAX * to_nbr / np.linalg.norm(to_nbr, axis=1, keepdims=True)
    # Start right at the boundary so that one unfiltered step crosses it.
    i, j = np.unravel_index(d.argmin(), d.shape)
    pos[j] = pos[i] + (pos[j] - pos[i]) / d[i, j] * (D_SAFE + 1e-3)
    u_nom[i] = V_MAX * (pos[j] - pos[i]) / np.linalg.norm(pos[j] - pos[i])
    if min(barriers_after_step(pos, np.zeros_like(pos), world)) < 0:
        return None  # moving robot j put it inside a wall or an obstacle: not a safe start
    u = filter_fn(pos, u_nom, world, params, limits)
    return min(barriers_after_step(pos, u, world))


def cbf_filter_fn(pos, u_nom, world, params, limits):
    return run_filter(pos, u_nom, world, params, limits, FilterConfig(dt_s=DT))[0][0]


@given(st.integers(0, 2**31 - 1), st.integers(2, 12), st.integers(0, 3))
def test_one_period_keeps_every_barrier_nonnegative(seed, n, n_obs):
    margin = step_safety_margin(cbf_filter_fn, seed, n, n_obs)
    assume(margin is not None)
    assert margin >= -ROW_ATOL


def test_safety_property_fails_without_the_filter():
    """The property above detects a filter that lets the nominal command through."""
    margins = [step_safety_margin(lambda p, u, *a: u, seed, 8, 2) for seed in range(20)]
    assert min(m for m in margins if m is not None) < -1e-3


def test_safety_property_fails_with_barrier_rows_disabled(monkeypatch):
    """Mutation: a class-K function that never constrains makes the property fail."""
    monkeypatch.setattr(cbf, "class_k", lambda h, *a, **k: np.full(np.shape(h), 1e6))
    margins = [step_safety_margin(cbf_filter_fn, seed, 8, 2) for seed in range(20)]
    assert min(m for m in margins if m is not None) < -1e-3


PARITY_N = 8


@jax.jit
def _jax_filter(pos, u_nom, nbr, mask, world, params, limits):
    return filter_robots(pos, u_nom, nbr, mask, world, params, limits, FilterConfig(dt_s=DT), jnp)


@given(st.integers(0, 2**31 - 1), st.integers(0, 3), st.booleans())
def test_jax_float32_matches_numpy_float64(seed, n_obs, uni):
    pos, u_nom, world, params, limits = make_case(seed, PARITY_N, n_obs, uni)
    (u_np, info_np), g = run_filter(pos, u_nom, world, params, limits, FilterConfig(dt_s=DT))

    def f32(tree):
        return jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, jnp.float32 if np.asarray(x).dtype.kind == "f" else None),
            tree,
        )

    u_j, info_j = _jax_filter(
        f32(pos),
        f32(u_nom),
        f32(pos[g.index]),
        jnp.asarray(g.mask),
        f32(world),
        f32(params),
        f32(limits),
    )
    np.testing.assert_allclose(np.asarray(u_j), u_np, atol=PARITY_ATOL)
    np.testing.assert_array_equal(np.asarray(info_j.status), info_np.status)


def test_decentralised_filter_matches_cvxpy():
    """Each robot's QP (its barrier rows plus the body-frame box) against cvxpy."""
    worst = 0.0
    for seed in range(60):
        pos, u_nom, world, params, limits = make_case(seed, 8, 2, unicycle=True)
        config = FilterConfig(dt_s=DT)
        (u, _), g = run_filter(pos, u_nom, world, params, limits, config)
        A, b = all_rows(pos, g, world, params, limits, config)
        for i in range(len(pos)):
            v = cp.Variable(2)
            keep = np.linalg.norm(A[i], axis=1) > 0
            cp.Problem(
                cp.Minimize(cp.sum_squares(v - u_nom[i])), [A[i][keep] @ v <= b[i][keep]]
            ).solve(solver=cp.CLARABEL)
            worst = max(worst, np.abs(v.value - u[i]).max())
    assert worst <= ORACLE_ATOL, f"worst deviation {worst:.2e}"


def test_centralised_filter_matches_cvxpy_and_is_safe():
    worst = 0.0
    for seed in range(30):
        pos, u_nom, world, params, limits = make_case(seed, 6, 2, unicycle=True)
        config = FilterConfig(mode="centralised", dt_s=DT)
        u, info = safety_filter(pos, u_nom, None, world, params, limits, config, np)
        assert (info.status == FilterStatus.OK).all()
        n = len(pos)
        v = cp.Variable((n, 2))
        cons = []
        for i in range(n):
            for j in range(i + 1, n):
                dp = pos[i] - pos[j]
                h = dp @ dp - D_SAFE**2
                alpha = cbf.class_k(h, min(params.gamma[i], params.gamma[j]), "linear", DT)
                cons.append(-2 * dp @ (v[i] - v[j]) <= alpha)
        own = barrier_rows(
            pos, np.zeros((n, 0, 2)), np.zeros((n, 0), bool), world, params, config, 1.0, np
        )
        box = cbf.box_rows(limits.yaw, limits.half_width, np)
        for i in range(n):
            A = np.concatenate([own.A[i], box.A[i]])
            b = np.concatenate([own.b[i], box.b[i]])
            keep = np.linalg.norm(A, axis=1) > 0
            cons.append(A[keep] @ v[i] <= b[keep])
        cp.Problem(cp.Minimize(cp.sum_squares(v - u_nom)), cons).solve(solver=cp.CLARABEL)
        worst = max(worst, np.abs(v.value - u).max())
    assert worst <= ORACLE_ATOL, f"worst deviation {worst:.2e}"


@pytest.mark.parametrize("where", ["own_position", "nominal", "neighbour"])
def test_nan_inputs_brake_and_say_so(where):
    pos, u_nom, world, params, limits = make_case(5, 6, 1, unicycle=True)
    g = neighbour_graph_np(pos, 5, 10.0)
    nbr = pos[g.index].copy()
    if where == "own_position":
        pos = pos.copy()
        pos[2, 0] = np.nan
        nbr = pos[g.index]
    elif where == "nominal":
        u_nom[2, 1] = np.inf
    else:
        nbr[2, 0, 0] = np.nan
    numpy_out = filter_robots(
        pos, u_nom, nbr, g.mask, world, params, limits, FilterConfig(dt_s=DT), np
    )
    jax_out = _jax_filter(pos, u_nom, nbr, g.mask, world, params, limits)
    for u, info in (numpy_out, jax_out):
        u, status = np.asarray(u), np.asarray(info.status)
        assert np.all(np.isfinite(u))
        assert status[2] == FilterStatus.INVALID_INPUT
        np.testing.assert_array_equal(u[2], 0.0)
        if where != "own_position":  # a NaN own position poisons the others' neighbour lists
            assert np.all(status[np.arange(6) != 2] != FilterStatus.INVALID_INPUT)


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_violated_state_is_relaxed_with_minimal_slack(xp):
    """Robots already inside each other's disc: slack, separation, no NaN, close to cvxpy."""
    pos, u_nom, world, params, limits = make_case(3, 4, 0, unicycle=False, overlap=True)
    g = neighbour_graph_np(pos, 3, 10.0)
    config = FilterConfig(dt_s=DT)
    if xp is np:
        u, info = filter_robots(pos, u_nom, pos[g.index], g.mask, world, params, limits, config)
    else:
        u, info = _jax_filter(pos, u_nom, pos[g.index], g.mask, world, params, limits)
    u, status, slack = np.asarray(u), np.asarray(info.status), np.asarray(info.slack)
    assert np.all(np.isfinite(u))
    assert status[0] in (FilterStatus.OK, FilterStatus.RELAXED)
    assert (status == FilterStatus.RELAXED).any()
    assert np.all(slack >= 0) and np.all(slack[status == FilterStatus.OK] == 0)
    # Robots 0 and 1 must not approach each other further.
    dp = pos[0] - pos[1]
    assert dp @ (u[0] - u[1]) >= -1e-6
    # Oracle: the same relaxed QP in cvxpy.
    rows = barrier_rows(pos, pos[g.index], g.mask, world, params, config, 0.5, np)
    box = cbf.box_rows(limits.yaw, limits.half_width, np)
    for i in np.flatnonzero(status == FilterStatus.RELAXED):
        v, s = cp.Variable(2), cp.Variable(nonneg=True)
        keep = np.linalg.norm(rows.A[i], axis=1) > 0
        cp.Problem(
            cp.Minimize(cp.sum_squares(v - u_nom[i]) + config.relax_weight * s**2),
            [rows.A[i][keep] @ v <= rows.b[i][keep] + s, box.A[i] @ v <= box.b[i]],
        ).solve(solver=cp.CLARABEL)
        tol = ORACLE_ATOL if xp is np else 1e-3
        np.testing.assert_allclose(
            u[i],
            np.clip(v.value, -V_MAX, V_MAX)
            * min(1.0, V_MAX / max(np.linalg.norm(v.value), 1e-12)),
            atol=tol,
        )
