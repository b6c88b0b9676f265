"""Per-row relaxation, degenerate geometry and zero robots, in both filter modes.

The relaxation's contract: a barrier row that holds (``h >= 0``) is never loosened, and a row
already violated (``h < 0``) may give but never past "no deeper" (``dh/dt >= 0``, i.e.
``a . u <= 0``).  ``test_property_fails_with_a_shared_slack`` shows the property test fails
when the relaxation is allowed to loosen every row, as the old shared slack did.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from marl_robots.controllers import cbf, qp, safety_filter
from marl_robots.controllers.safety_filter import (
    CBFParams,
    FilterConfig,
    FilterStatus,
    Limits,
    World,
    barrier_rows,
    centralised_filter,
    filter_robots,
    pair_order,
)
from marl_robots.core.graph import neighbour_graph_np

#: Allowed violation of a hard row after normalisation [m/s].
ROW_TOL = 2e-4
D = 0.21  # pair distance between filter points [m]
ARENA = np.array([-1.6, 1.6, -1.0, 1.0], np.float32)
DT = 0.033


def _params(n, gamma=5.0):
    return CBFParams(np.full(n, gamma, np.float32), np.float32(D), np.float32(0.095),
                     np.float32(0.095))


def _limits(n, v=0.2):
    return Limits(np.full((n, 2), v, np.float32), np.zeros(n, np.float32),
                  np.full(n, v, np.float32))


def _world(obstacles=()):
    obs = np.zeros((2, 3), np.float32)
    if len(obstacles):
        obs[: len(obstacles)] = obstacles
    return World(obs, np.arange(2) < len(obstacles), ARENA)


def _decentralised(pos, u_nom, world, xp=np, k=6):
    n = len(pos)
    g = neighbour_graph_np(np.asarray(pos), min(k, max(n - 1, 0)), 2.0)
    cfg = FilterConfig(dt_s=DT)
    args = (pos, u_nom, pos[g.index], g.mask, world, _params(n), _limits(n), cfg)
    if xp is jnp:
        args = tuple(_to_jnp(a) for a in args[:4]) + args[4:]
    u, info = filter_robots(*args, xp=xp, order=pair_order(g.index, np))
    return np.asarray(u), info, g


def _to_jnp(a):
    return jnp.asarray(a)


def _rows_of(pos, world, g, share):
    """The barrier rows each robot enforced (same as inside the filter), as NumPy."""
    n = len(pos)
    return barrier_rows(pos, pos[g.index], g.mask, world, _params(n), FilterConfig(dt_s=DT),
                        share, np, pair_order(g.index, np))


def _check_contract(u, rows):
    A, b, h = (np.asarray(x, np.float64) for x in rows)
    norm = np.maximum(np.linalg.norm(A, axis=-1), 1e-12)
    lhs = np.einsum("nmd,nd->nm", A, u) / norm
    present = np.linalg.norm(A, axis=-1) > 1e-6
    hard = present & (h >= 0)
    soft = present & (h < 0)
    worst_hard = np.max(np.where(hard, lhs - b / norm, -np.inf))
    worst_soft = np.max(np.where(soft, lhs, -np.inf))
    return worst_hard, worst_soft


def _crowd(data, n):
    """Robots around the origin, some pairs inside the pair margin, one obstacle."""
    pos = np.array(
        data.draw(
            st.lists(
                st.tuples(st.floats(-0.35, 0.35), st.floats(-0.35, 0.35)),
                min_size=n,
                max_size=n,
            )
        ),
        np.float32,
    )
    u_nom = np.array(
        data.draw(
            st.lists(st.tuples(st.floats(-0.2, 0.2), st.floats(-0.2, 0.2)), min_size=n,
                     max_size=n)
        ),
        np.float32,
    )
    xy = st.floats(-0.4, 0.4)
    obstacle = data.draw(st.tuples(xy, xy, st.floats(0.05, 0.2)))
    return pos, u_nom, _world([obstacle])


@settings(max_examples=40)
@given(data=st.data(), n=st.integers(2, 7))
def test_relaxation_never_loosens_a_satisfied_row_nor_deepens_a_violated_one(data, n):
    pos, u_nom, world = _crowd(data, n)
    u, info, g = _decentralised(pos, u_nom, world)
    worst_hard, worst_soft = _check_contract(u, _rows_of(pos, world, g, 0.5))
    assert worst_hard <= ROW_TOL, worst_hard
    assert worst_soft <= ROW_TOL, worst_soft
    # Braking (only in pathological pile-ups, e.g. three coincident robots) is the safe answer.
    braked = np.asarray(info.status) == FilterStatus.INFEASIBLE
    assert np.all(u[braked] == 0)


@settings(max_examples=20)
@given(data=st.data(), n=st.integers(2, 6))
def test_centralised_relaxation_has_the_same_contract(data, n):
    pos, u_nom, world = _crowd(data, n)
    u, info = centralised_filter(pos, u_nom, world, _params(n), _limits(n),
                                 FilterConfig(mode="centralised", dt_s=DT), np)
    assume(np.all(info.status <= FilterStatus.RELAXED))
    # Pair rows in full (share 1) once per pair, plus each robot's own rows.
    i, j = np.triu_indices(n, 1)
    diff = pos[i] - pos[j]
    h = np.sum(diff * diff, -1) - D * D
    alpha = cbf.class_k(h, np.float32(5.0), "linear", DT, np)
    diff = cbf.separating_diff(diff, -np.ones(len(i), np.float32), np)  # as the filter does
    scale = 2 * np.sqrt(2) * np.linalg.norm(diff, axis=-1)
    lhs = np.sum(-2 * diff * (u[i] - u[j]), -1) / scale
    rhs = alpha / scale
    assert np.all(np.where(h >= 0, lhs - rhs, -1) <= ROW_TOL)
    assert np.all(np.where(h < 0, lhs, -1) <= ROW_TOL)
    own = barrier_rows(pos, np.zeros((n, 0, 2), np.float32), np.zeros((n, 0), bool), world,
                       _params(n), FilterConfig(dt_s=DT), 1.0, np)
    worst_hard, worst_soft = _check_contract(u, own)
    assert worst_hard <= ROW_TOL and worst_soft <= ROW_TOL


def _shared_slack_relaxation(A, b, h, box_A, box_b, u0, weight, iters, xp):
    """The relaxation this project had before: one slack shared by every barrier row."""
    m = A.shape[0]
    P = np.diag([2.0, 2.0, 2.0 * weight]).astype(np.float64)
    q = np.concatenate([-2.0 * u0, [0.0]])
    G = np.concatenate([np.concatenate([A, -np.ones((m, 1))], 1),
                        np.concatenate([box_A, np.zeros((4, 1))], 1), [[0.0, 0.0, -1.0]]])
    hh = np.concatenate([b, box_b, [0.0]])
    res = qp.solve_qp_dense(P, q, G, hh, xp=np, iters=iters)
    return res.x[:2].astype(u0.dtype), np.float32(max(res.x[2], 0.0)), True


def test_property_fails_with_a_shared_slack(monkeypatch):
    """Mutation: let every barrier row give (the old shared slack): a satisfied row loosens.

    Robot 0 sits 7.5 cm inside an obstacle's margin (a row it cannot meet) with robot 1 at
    the pair distance ahead of it, and is commanded at full speed towards robot 1.
    """
    pos = np.array([[0.0, 0.0], [D, 0.0]], np.float32)
    u_nom = np.array([[0.2, 0.0], [0.0, 0.0]], np.float32)
    world = _world([(0.0, -0.12, 0.1)])
    u, info, g = _decentralised(pos, u_nom, world)
    rows = _rows_of(pos, world, g, 0.5)
    assert info.status[0] == FilterStatus.RELAXED
    assert _check_contract(u, rows)[0] <= ROW_TOL
    assert u[0, 0] <= ROW_TOL  # no approach towards the neighbour at the pair distance
    monkeypatch.setattr(safety_filter, "_relaxed_one", _shared_slack_relaxation)
    u_bad, _, _ = _decentralised(pos, u_nom, world)
    assert _check_contract(u_bad, rows)[0] > 10 * ROW_TOL
    assert u_bad[0, 0] > 0.05


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_coincident_robots_part_in_opposite_directions(xp):
    pos = np.array([[0.3, 0.2], [0.3, 0.2], [1.0, -0.5]], np.float32)
    u_nom = np.zeros((3, 2), np.float32)
    u, info, _ = _decentralised(pos, u_nom, _world(), xp)
    status = np.asarray(info.status)
    assert status[0] == status[1] == FilterStatus.RELAXED  # never OK while h < 0
    assert u[0, 0] < -0.1 and u[1, 0] > 0.1  # robot 0 (lower id) goes -x, robot 1 goes +x
    assert status[2] == FilterStatus.OK and np.all(u[2] == 0)


def test_coincident_robots_centralised():
    pos = np.array([[0.3, 0.2], [0.3, 0.2]], np.float32)
    u, info = centralised_filter(pos, np.zeros((2, 2), np.float32), _world(), _params(2),
                                 _limits(2), FilterConfig(mode="centralised", dt_s=DT), np)
    assert list(info.status) == [FilterStatus.RELAXED] * 2
    assert u[0, 0] < -0.1 and u[1, 0] > 0.1


@pytest.mark.parametrize("mode", ["decentralised", "centralised"])
def test_robot_at_an_obstacle_centre_leaves_it(mode):
    pos = np.array([[0.5, 0.5]], np.float32)
    world = _world([(0.5, 0.5, 0.1)])
    u_nom = np.zeros((1, 2), np.float32)
    if mode == "decentralised":
        u, info, _ = _decentralised(pos, u_nom, world)
    else:
        u, info = centralised_filter(pos, u_nom, world, _params(1), _limits(1),
                                     FilterConfig(mode="centralised", dt_s=DT), np)
    assert info.status[0] == FilterStatus.RELAXED
    assert u[0, 0] > 0.1  # out along +x


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_zero_robots_both_modes(xp):
    empty = xp.zeros((0, 2), xp.float32)
    params = CBFParams(xp.zeros(0, xp.float32), 0.21, 0.095, 0.095)
    limits = Limits(xp.zeros((0, 2), xp.float32), xp.zeros(0, xp.float32),
                    xp.zeros(0, xp.float32))
    world = _world()
    u, info = centralised_filter(empty, empty, world, params, limits,
                                 FilterConfig(mode="centralised"), xp)
    assert u.shape == (0, 2) and info.status.shape == (0,)
    u, info = filter_robots(empty, empty, xp.zeros((0, 6, 2), xp.float32),
                            xp.zeros((0, 6), bool), world, params, limits, FilterConfig(), xp)
    assert u.shape == (0, 2) and info.status.shape == (0,)
